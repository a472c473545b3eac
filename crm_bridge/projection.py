"""Minimal projections of Patient, Appointment and Encounter for a CRM.

Why (Decree 356/2025/ND-CP Art. 7 minimum necessary; Law 91/2025 Art. 26
health data is sensitive): each function builds only the *known* CRM fields
(never copying a FHIR element wholesale) and then keeps the ones the CRM's
allowlist names.  Record numbers, CCCD, BHYT, addresses, diagnoses, notes,
practitioners and locations have no projection field at all, so no
configuration can send them.

The field tables below are the one list of CRM field names: the allowlist's
vocabulary (``crm_bridge.config.KNOWN_FIELDS``) is derived from them, so a
field cannot be configurable without a projection or projected without being
configurable.  Phones leave in E.164 by the one phone rule
(:mod:`common.phones`), also for values stored before that rule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

from common import normalize_phone

JSON = dict[str, Any]


class FieldAllowlist(Protocol):
    """What a projection needs of a CRM client (``crm_bridge.config.CrmClient``)."""

    def allows(self, kind: str, name: str) -> bool: ...


def _keep(client: FieldAllowlist, kind: str, values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in (None, "", []) and client.allows(kind, k)}


def _display_name(patient: dict[str, Any]) -> str | None:
    names = patient.get("name") or []
    official = [n for n in names if n.get("use") == "official"] or names
    if not official:
        return None
    name = official[0]
    if name.get("text"):
        return str(name["text"])
    parts = [name.get("family") or "", *(name.get("given") or [])]
    return " ".join(p for p in parts if p) or None


def _contact(patient: dict[str, Any], kind: str) -> str | None:
    for point in patient.get("telecom") or []:
        value = point.get("value")
        if not value:
            continue
        if kind == "phone" and point.get("system") in ("phone", "sms"):
            return normalize_phone(str(value).strip()) or str(value)
        if kind == "zalo" and point.get("system") == "other" and str(value).lower().startswith("zalo:"):
            return str(value)[5:]
    return None


def _service(concepts: Any) -> dict[str, str] | None:
    if isinstance(concepts, dict):
        concepts = [concepts]
    for concept in concepts or []:
        coding = (concept.get("coding") or [{}])[0]
        code = coding.get("code")
        display = coding.get("display") or concept.get("text")
        if code or display:
            return {k: str(v) for k, v in (("code", code), ("display", display)) if v}
    return None


def _birth_year(patient: JSON) -> int | None:
    birth = str(patient.get("birthDate") or "")
    return int(birth[:4]) if birth[:4].isdigit() else None


PatientField = Callable[[JSON, str], Any]  # (Patient, pseudonym) -> value
ResourceField = Callable[[JSON], Any]

PATIENT_PROJECTION: Mapping[str, PatientField] = {
    "pseudonym": lambda patient, pseudonym: pseudonym,
    "display_name": lambda patient, _: _display_name(patient),
    "gender": lambda patient, _: patient.get("gender"),
    "birth_year": lambda patient, _: _birth_year(patient),
    "phone": lambda patient, _: _contact(patient, "phone"),
    "zalo": lambda patient, _: _contact(patient, "zalo"),
}
APPOINTMENT_PROJECTION: Mapping[str, ResourceField] = {
    "appointment_id": lambda appointment: appointment.get("id"),
    "start": lambda appointment: appointment.get("start"),
    "end": lambda appointment: appointment.get("end"),
    "status": lambda appointment: appointment.get("status"),
    "service": lambda appointment: _service(appointment.get("serviceType")),
}
ENCOUNTER_PROJECTION: Mapping[str, ResourceField] = {
    "completed_at": lambda encounter: (
        (encounter.get("period") or {}).get("end") or encounter.get("meta", {}).get("lastUpdated")
    ),
    "service_type": lambda encounter: _service(encounter.get("serviceType")),
}

#: Every CRM field name, by kind: the vocabulary of the projection config file.
PROJECTION_FIELDS: Mapping[str, frozenset[str]] = {
    "patient": frozenset(PATIENT_PROJECTION),
    "appointment": frozenset(APPOINTMENT_PROJECTION),
    "encounter": frozenset(ENCOUNTER_PROJECTION),
}


def project_patient(client: FieldAllowlist, patient: JSON, pseudonym: str) -> JSON:
    allowed = {k: f for k, f in PATIENT_PROJECTION.items() if client.allows("patient", k)}
    return _keep(client, "patient", {k: f(patient, pseudonym) for k, f in allowed.items()})


def project_appointment(client: FieldAllowlist, appointment: JSON) -> JSON:
    allowed = {k: f for k, f in APPOINTMENT_PROJECTION.items() if client.allows("appointment", k)}
    return _keep(client, "appointment", {k: f(appointment) for k, f in allowed.items()})


def project_encounter(client: FieldAllowlist, encounter: JSON) -> JSON:
    allowed = {k: f for k, f in ENCOUNTER_PROJECTION.items() if client.allows("encounter", k)}
    return _keep(client, "encounter", {k: f(encounter) for k, f in allowed.items()})


def project_merge(old_pseudonym: str, new_pseudonym: str) -> JSON:
    """``patient.merged`` data: the CRM's two pseudonyms, nothing else (no record numbers).

    Why: the CRM holds a customer per pseudonym and must merge them as the HIS
    merged the records (HL7 ADT^A40); only pseudonyms it already knows are named.
    """
    return {"old": old_pseudonym, "new": new_pseudonym}
