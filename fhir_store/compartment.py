"""Patient compartment confinement (https://hl7.org/fhir/R4/compartmentdefinition-patient.html).

A caller bound to one patient (SMART ``patient/`` scopes, or a patient's own
privacy request) may see only that patient's compartment: the Patient itself
and the Encounters and Appointments that reference it.  The store enforces it
from :attr:`RequestContext.patient_ids`, so every adapter gets the same rule.

A resource outside the compartment is answered exactly like a missing one
(:class:`common.Concealed`, RFC 9110 §15.5.4): a 403 for an existing id and a
404 for an unknown one would tell a patient which ids exist.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from common import Concealed, Forbidden, NotFound
from fhir_store.search import Filter, SearchQuery

# The search parameter that selects a patient's compartment, per resource type.
COMPARTMENT_PARAM = {"Patient": "_id", "Encounter": "patient", "Appointment": "patient"}


def restrict_to_compartment(query: SearchQuery, patient_ids: tuple[str, ...]) -> SearchQuery:
    param = COMPARTMENT_PARAM.get(query.resource_type)
    if param is None:
        raise Forbidden(
            f"{query.resource_type} is outside the patient compartment", location=query.resource_type
        )
    return replace(query, filters=[*query.filters, Filter(param, None, patient_ids)])


def in_compartment(resource: dict[str, Any], patient_ids: tuple[str, ...]) -> bool:
    refs = {f"Patient/{pid}" for pid in patient_ids}
    resource_type = resource.get("resourceType")
    if resource_type == "Patient":
        return resource.get("id") in patient_ids
    if resource_type == "Encounter":
        return (resource.get("subject") or {}).get("reference") in refs
    if resource_type == "Appointment":
        return any((p.get("actor") or {}).get("reference") in refs for p in resource.get("participant") or [])
    return False


OUTSIDE = "outside the caller's patient compartment"


def conceal(unknown: NotFound) -> Concealed:
    """The refusal that answers like ``unknown`` (the error the missing case raises)."""
    return Concealed(unknown.message, location=unknown.location, reason=OUTSIDE)


def check_compartment(resource: dict[str, Any], patient_ids: tuple[str, ...], unknown: NotFound) -> None:
    """Raise ``unknown`` as :class:`common.Concealed` when ``resource`` is outside the compartment."""
    if patient_ids and not in_compartment(resource, patient_ids):
        raise conceal(unknown)
