"""Retention of medical records and legal hold: the one rule, and the store hook that enforces it.

Why (Circular 33/2025/TT-BYT, medical record retention; the periods are those
of Law 40/2009/QH12 on Medical Examination and Treatment Art. 59(3)(b), which
the later texts keep: inpatient and outpatient records at least 10 years,
labour and domestic accident records at least 15, records of mental-health
patients and of patients who died at least 20; Circular 13/2025/TT-BYT,
formerly 46/2018, Art. 8, for the record-keeping duties of an EMR system).
docs/patient-rights.md states the reading taken here.

* **Which types**: the medical record carebridge holds for the HIS is
  :data:`RECORD_TYPES` (Patient, Encounter, Appointment).
* **How long**: :func:`retention_years` -- 10 years; 20 when the record shows
  the patient died (``Patient.deceased[x]``).  Accident and mental-health
  records are classified by the HIS, which does not send that classification:
  carebridge reports the general period as a minimum ("at least").
* **From which date**: :func:`retention_start` -- the latest clinical date of
  the record (end of the last encounter or appointment, date of death), and
  never before the day the hold was placed.
* **Legal hold**: an erasure (Law 91/2025/QH15 Art. 14) cannot remove a record
  under retention, so the record is tagged :data:`LEGAL_HOLD` and labelled
  :data:`RESTRICTED` (``R``, never disclosed to a processor: ``consent.pdp``).
  :func:`is_held` is the predicate; :func:`held_until` the earliest date the
  retention could end.
* **No early deletion**: :class:`RetentionHoldHook` refuses a ``delete`` of a
  held resource on every channel (REST DELETE, conditional delete, a Bundle
  entry) with :class:`~common.errors.RetentionHold` (409, ``business-rule``).

Why here (``consent``, not ``consent.rights``): the decision point
(``consent.pdp``, via ``consent.purposes``) and the rights workflow both use it,
and ``consent.rights`` imports the decision point; a leaf module of ``consent``
is importable from both without a cycle, and the gateway declares its hook.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import date
from typing import Any

from sqlalchemy import Connection

from common import RetentionHold
from fhir_store import RequestContext, ResourceChange

CIRCULAR_RETENTION = "Circular 33/2025/TT-BYT (medical record retention: at least 10 years)"
CIRCULAR_RECORDS = "Circular 13/2025/TT-BYT (replacing Circular 46/2018/TT-BYT) Art. 8"

RECORD_TYPES: tuple[str, ...] = ("Patient", "Encounter", "Appointment")
RETENTION_YEARS = 10  # inpatient and outpatient records
RETENTION_YEARS_DECEASED = 20  # records of patients who died

CONFIDENTIALITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
RESTRICTED_CODE = "R"
RESTRICTED = {"system": CONFIDENTIALITY_SYSTEM, "code": RESTRICTED_CODE, "display": "restricted"}
RETENTION_SYSTEM = "https://fhir.carebridge.vn/CodeSystem/retention"
LEGAL_HOLD_CODE = "legal-hold"
LEGAL_HOLD = {
    "system": RETENTION_SYSTEM,
    "code": LEGAL_HOLD_CODE,
    "display": "retained under legal hold after an erasure request (Circular 33/2025/TT-BYT)",
}


# -- which types, which labels ---------------------------------------------------------


def is_record_type(resource_type: str) -> bool:
    """Whether resources of this type are part of the medical record under retention."""
    return resource_type in RECORD_TYPES


def _codings(resource: dict[str, Any] | None, element: str) -> list[dict[str, Any]]:
    values = ((resource or {}).get("meta") or {}).get(element) or []
    return [c for c in values if isinstance(c, dict)]


def is_restricted(resource: dict[str, Any] | None) -> bool:
    """Whether ``meta.security`` carries the restricted (``R``) label."""
    return any(c.get("code") == RESTRICTED_CODE for c in _codings(resource, "security"))


def is_held(resource: dict[str, Any] | None) -> bool:
    """Whether the resource is under legal hold (``meta.tag`` :data:`LEGAL_HOLD`)."""
    return any(
        c.get("code") == LEGAL_HOLD_CODE and c.get("system") == RETENTION_SYSTEM
        for c in _codings(resource, "tag")
    )


def with_hold_labels(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` with the R label and the legal-hold tag added (in place, returned)."""
    with_restricted_label(resource)
    if not is_held(resource):
        resource.setdefault("meta", {}).setdefault("tag", []).append(dict(LEGAL_HOLD))
    return resource


def with_restricted_label(resource: dict[str, Any]) -> dict[str, Any]:
    """``resource`` with the R label (in place, returned): a restriction without legal hold."""
    if not is_restricted(resource):
        resource.setdefault("meta", {}).setdefault("security", []).append(dict(RESTRICTED))
    return resource


# -- how long, from which date ---------------------------------------------------------


def _dates(resource: dict[str, Any]) -> Iterable[date]:
    period = resource.get("period") or {}
    for text in (
        period.get("end"),
        period.get("start"),
        resource.get("end"),
        resource.get("start"),
        resource.get("deceasedDateTime"),
    ):
        if isinstance(text, str) and len(text) >= 10:
            try:
                yield date.fromisoformat(text[:10])
            except ValueError:
                continue


def retention_years(resources: Iterable[dict[str, Any]]) -> int:
    """The retention period of one patient's record, in years (see the module docstring)."""
    for resource in resources:
        if resource.get("resourceType") == "Patient" and (
            resource.get("deceasedBoolean") is True or resource.get("deceasedDateTime")
        ):
            return RETENTION_YEARS_DECEASED
    return RETENTION_YEARS


def retention_start(resources: Iterable[dict[str, Any]], hold_date: date) -> date:
    """The date the period runs from: the latest clinical date, never before ``hold_date``."""
    latest = hold_date
    for resource in resources:
        for when in _dates(resource):
            latest = max(latest, when)
    return latest


def held_until(resources: Sequence[dict[str, Any]], hold_date: date) -> date:
    """The earliest date the retention of this record (one patient's resources) may end."""
    start = retention_start(resources, hold_date)
    years = retention_years(resources)
    try:
        return start.replace(year=start.year + years)
    except ValueError:  # 29 February + N years
        return start.replace(year=start.year + years, day=28)


# -- the store hook --------------------------------------------------------------------


def refuse_held_deletes(changes: Sequence[ResourceChange]) -> None:
    """Raise :class:`RetentionHold` for the first ``delete`` of a resource under legal hold."""
    for change in changes:
        if change.action == "delete" and is_held(change.previous):
            raise RetentionHold(
                f"{change.resource_type}/{change.id} is retained under legal hold and cannot be "
                f"deleted: medical records are kept for their retention period ({CIRCULAR_RETENTION}), "
                "even after an erasure request",
                location=change.resource_type,
            )


class RetentionHoldHook:
    """StoreHook (pre-commit): a held resource is never deleted, whatever the channel.

    Reads ``change.previous`` (the version being deleted); changes nothing, so
    the stages after it see the change as written.  Raising rolls back the whole
    transaction (a transaction Bundle fails as a whole).  No internal workflow
    deletes held resources: erasure relabels them (``consent.rights.erasure``).
    """

    def on_changes(
        self, conn: Connection, changes: Sequence[ResourceChange], context: RequestContext
    ) -> None:
        refuse_held_deletes(changes)


__all__ = [
    "CIRCULAR_RECORDS",
    "CIRCULAR_RETENTION",
    "LEGAL_HOLD",
    "RECORD_TYPES",
    "RESTRICTED",
    "RETENTION_YEARS",
    "RETENTION_YEARS_DECEASED",
    "RetentionHoldHook",
    "held_until",
    "is_held",
    "is_record_type",
    "is_restricted",
    "refuse_held_deletes",
    "retention_start",
    "retention_years",
    "with_hold_labels",
    "with_restricted_label",
]
