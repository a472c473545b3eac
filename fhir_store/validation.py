"""Resource validation with fhir.resources (R4B models; identical to R4 for our types).

Validation happens once, on write.  Reads serve the stored bytes and never
re-validate.  Validation on write also normalises, in place, what has one
rule for the whole system: phone ContactPoints become E.164 with the original
text kept in an extension (:mod:`common.phones`, DESIGN §3), so a phone sent
over REST is stored, indexed and sent to the CRM like one mapped from HL7.  fhir.resources checks structure, datatypes and unknown elements
but not required value-set bindings, so the bindings that matter to us
(gender, Encounter/Appointment status) are checked here too
(https://hl7.org/fhir/R4/terminologies.html#required), and so are the
Appointment timing invariants app-2 and app-3
(https://hl7.org/fhir/R4/appointment.html#invs): the CRM reminders are sent
from Appointment.start, so a booked appointment without one must not be stored.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from common import InvalidInput, normalize_telecoms

SUPPORTED_TYPES: set[str] = {"Patient", "Encounter", "Appointment"}

_REQUIRED_BINDINGS: dict[tuple[str, str], frozenset[str]] = {
    ("Patient", "gender"): frozenset({"male", "female", "other", "unknown"}),
    ("Encounter", "status"): frozenset(
        {
            "planned",
            "arrived",
            "triaged",
            "in-progress",
            "onleave",
            "finished",
            "cancelled",
            "entered-in-error",
            "unknown",
        }
    ),
    ("Appointment", "status"): frozenset(
        {
            "proposed",
            "pending",
            "booked",
            "arrived",
            "fulfilled",
            "cancelled",
            "noshow",
            "entered-in-error",
            "checked-in",
            "waitlist",
        }
    ),
}


# FHIR R4 app-3: only these statuses may lack start and end.
_UNTIMED_APPOINTMENT = frozenset({"proposed", "cancelled", "waitlist"})


def _check_appointment_times(resource: dict[str, Any]) -> None:
    """app-2 (start and end both or neither), app-3 (only proposed/cancelled/waitlist may lack them)."""
    has_start, has_end = "start" in resource, "end" in resource
    if has_start != has_end:
        missing = "end" if has_start else "start"
        raise InvalidInput(
            f"Appointment needs both start and end or neither (app-2); {missing} is missing",
            location=f"Appointment.{missing}",
        )
    status = resource.get("status")
    if not has_start and status not in _UNTIMED_APPOINTMENT:
        raise InvalidInput(
            f"a '{status}' Appointment needs start and end; only proposed, cancelled and waitlist"
            " appointments may lack them (app-3)",
            location="Appointment.start",
        )


def register_type(resource_type: str) -> None:
    """Enable a resource type; through ``fhir_store.registry.Registry.add_resource_type``."""
    SUPPORTED_TYPES.add(resource_type)


@cache
def _model(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


def _path(resource_type: str, loc: tuple[Any, ...]) -> str:
    parts = [resource_type]
    for item in loc:
        if isinstance(item, int):
            parts[-1] += f"[{item}]"
        else:
            parts.append(str(item))
    return ".".join(parts)


def validate_resource(resource: dict[str, Any]) -> None:
    """Normalise ``resource`` in place (phones), then raise :class:`InvalidInput` naming the first problem."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or not resource_type:
        raise InvalidInput("resource has no resourceType", location="resourceType")
    if resource_type not in SUPPORTED_TYPES:
        raise InvalidInput(f"resource type '{resource_type}' is not supported here", location="resourceType")
    normalize_telecoms(resource)
    try:
        _model(resource_type).model_validate(resource)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = tuple(x for x in first["loc"] if x != "__root__")
        raise InvalidInput(
            f"{first['msg']}" + (f" ({len(exc.errors())} problems)" if len(exc.errors()) > 1 else ""),
            location=_path(resource_type, loc),
        ) from None
    except (ValueError, TypeError) as exc:
        raise InvalidInput(str(exc), location=resource_type) from None
    for (bound_type, element), allowed in _REQUIRED_BINDINGS.items():
        if bound_type == resource_type and element in resource and resource[element] not in allowed:
            raise InvalidInput(
                f"'{resource[element]}' is not a valid code for {resource_type}.{element}",
                location=f"{resource_type}.{element}",
            )
    if resource_type == "Appointment":
        _check_appointment_times(resource)
