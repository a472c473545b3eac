"""Minimal projections of Patient, Appointment and Encounter for a CRM.

Why (Decree 356/2025/ND-CP Art. 7 minimum necessary; Law 91/2025 Art. 26
health data is sensitive): each function builds only the *known* CRM fields
(never copying a FHIR element wholesale) and then keeps the ones the CRM's
allowlist names.  Record numbers, CCCD, BHYT, addresses, diagnoses, notes,
practitioners and locations have no projection field at all, so no
configuration can send them.
"""

from __future__ import annotations

from typing import Any

from crm_bridge.config import CrmClient


def _keep(client: CrmClient, kind: str, values: dict[str, Any]) -> dict[str, Any]:
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
            return str(value)
        if kind == "zalo" and point.get("system") == "other" and str(value).lower().startswith("zalo:"):
            return str(value)[5:]
    return None


def project_patient(client: CrmClient, patient: dict[str, Any], pseudonym: str) -> dict[str, Any]:
    birth = str(patient.get("birthDate") or "")
    return _keep(
        client,
        "patient",
        {
            "pseudonym": pseudonym,
            "display_name": _display_name(patient),
            "gender": patient.get("gender"),
            "birth_year": int(birth[:4]) if birth[:4].isdigit() else None,
            "phone": _contact(patient, "phone"),
            "zalo": _contact(patient, "zalo"),
        },
    )


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


def project_appointment(client: CrmClient, appointment: dict[str, Any]) -> dict[str, Any]:
    return _keep(
        client,
        "appointment",
        {
            "appointment_id": appointment.get("id"),
            "start": appointment.get("start"),
            "end": appointment.get("end"),
            "status": appointment.get("status"),
            "service": _service(appointment.get("serviceType")),
        },
    )


def project_encounter(client: CrmClient, encounter: dict[str, Any]) -> dict[str, Any]:
    period = encounter.get("period") or {}
    return _keep(
        client,
        "encounter",
        {
            "completed_at": period.get("end") or encounter.get("meta", {}).get("lastUpdated"),
            "service_type": _service(encounter.get("serviceType")),
        },
    )
