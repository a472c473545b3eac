"""FHIR Appointment → SIU^S12 for CRM→HIS booking (the reverse of :mod:`mappers.siu`).

The CRM books with a pseudonymous patient; ``patient_pseudo`` is the minimal
Patient projection the crm_bridge resolved (normally just the record number
identifier, optionally name/birthDate/gender/telecom).  Nothing else about the
patient is sent.  Output is v2.5.1, UTF-8, original acknowledgment mode,
segments joined by CR, no MLLP framing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from common import BASE
from mappers.ack import escape
from mappers.datatypes import fhir_to_dtm
from mappers.hl7_encoding import EncodingChars

_ENC = EncodingChars("|", "^", "~", "\\", "&")
_STATUS = {"proposed": "Pending", "pending": "Pending", "booked": "Booked", "waitlist": "Waitlist"}
_GENDER = {"male": "M", "female": "F", "other": "O", "unknown": "U"}


def _esc(value: object) -> str:
    return escape(str(value), _ENC) if value is not None else ""


def _join(*parts: str, sep: str = "^") -> str:
    return sep.join(parts).rstrip(sep)


def _coding(concept: dict[str, Any] | None) -> str:
    if not concept:
        return ""
    coding = (concept.get("coding") or [{}])[0]
    code = coding.get("code") or ""
    display = coding.get("display") or concept.get("text") or ""
    system = coding.get("system") or ""
    table = system.rsplit("/v2-", 1)[1] if "terminology.hl7.org/CodeSystem/v2-" in system else ""
    return _join(_esc(code), _esc(display), (f"HL7{table}" if table else "LOCAL") if code else "")


def _authority(system: str, kind: str) -> str:
    prefix = f"{BASE}/{kind}/"
    return system[len(prefix) :] if system.startswith(prefix) else ""


def _identifier(resource: dict[str, Any], kind: str) -> tuple[str, str]:
    for ident in resource.get("identifier") or []:
        authority = _authority(ident.get("system", ""), kind)
        if authority and ident.get("value"):
            return ident["value"], authority
    return "", ""


def _xpn(name: dict[str, Any]) -> str:
    given = list(name.get("given") or [])
    first = given.pop() if given else ""  # Vietnamese display order: the given name is last
    return _join(_esc(name.get("family", "")), _esc(first), _esc(" ".join(given)))


def appointment_to_siu_s12(
    appointment: dict[str, Any],
    patient_pseudo: dict[str, Any],
    *,
    sending_app: str,
    sending_facility: str,
    receiving_app: str,
    receiving_facility: str,
    control_id: str,
    now: datetime,
) -> bytes:
    """Build the SIU^S12 request the HIS turns into a booking."""
    start = appointment.get("start") or ""
    end = appointment.get("end") or ""
    minutes = appointment.get("minutesDuration")
    if minutes is None and start and end:
        delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
        minutes = int(delta.total_seconds() // 60)
    dur = str(minutes) if minutes else ""
    placer_id, placer_ns = _identifier(appointment, "appointment/placer")
    if not placer_id:
        placer_id, placer_ns = appointment.get("id", ""), sending_facility
    filler_id, filler_ns = _identifier(appointment, "appointment/filler")
    reason = (appointment.get("reasonCode") or [None])[0]
    status = _STATUS.get(appointment.get("status", ""), "Pending")
    msh = [
        "MSH",
        "^~\\&",
        _esc(sending_app),
        _esc(sending_facility),
        _esc(receiving_app),
        _esc(receiving_facility),
        now.strftime("%Y%m%d%H%M%S%z"),
        "",
        "SIU^S12^SIU_S12",
        _esc(control_id),
        "P",
        "2.5.1",
        *[""] * 5,
        "UNICODE UTF-8",
    ]
    sch = [""] * 26
    sch[0] = "SCH"
    sch[1] = _join(_esc(placer_id), _esc(placer_ns))
    sch[2] = _join(_esc(filler_id), _esc(filler_ns))
    sch[6] = _coding(reason) or "CRM^Booking from CRM^LOCAL"
    sch[7] = _coding(reason)
    sch[8] = _coding(appointment.get("appointmentType"))
    sch[9] = dur
    sch[10] = "MIN" if dur else ""
    sch[11] = _join("", "", dur, fhir_to_dtm(start) if start else "", fhir_to_dtm(end) if end else "")
    sch[16] = sch[20] = _esc(sending_app)
    sch[25] = status
    mrn, authority = _identifier(patient_pseudo, "mrn")
    pid = ["PID", "1", "", _join(_esc(mrn), "", "", _esc(authority), "MR") if mrn else ""]
    pid += [""] * 10
    names = patient_pseudo.get("name") or []
    pid[5] = (_xpn(names[0]) if names else "") or '""'  # PID-5 is required: explicit HL7 null
    pid[7] = fhir_to_dtm(patient_pseudo["birthDate"]) if patient_pseudo.get("birthDate") else ""
    pid[8] = _GENDER.get(patient_pseudo.get("gender", ""), "")
    phones = [t for t in patient_pseudo.get("telecom") or [] if t.get("system") == "phone"]
    pid[13] = _join(_esc(phones[0]["value"]), "PRN", "PH") if phones else ""
    segments = ["|".join(msh[:1]) + "|" + "|".join(msh[1:]), "|".join(sch), "|".join(pid).rstrip("|")]
    segments.append("RGS|1|A")
    for i, service in enumerate(appointment.get("serviceType") or [], start=1):
        segments.append(f"AIS|{i}|A|{_coding(service)}|{fhir_to_dtm(start) if start else ''}|||{dur}|MIN")
    aip = ail = 0
    for part in appointment.get("participant") or []:
        actor = part.get("actor") or {}
        kind = actor.get("type") or actor.get("reference", "").split("/")[0]
        if kind == "Practitioner":
            aip += 1
            ident = (actor.get("identifier") or {}).get("value", "")
            display = _esc(actor.get("display", ""))
            segments.append(f"AIP|{aip}|A|{_join(_esc(ident), display)}")
        elif kind == "Location":
            ail += 1
            place = _join("", "", "", _esc(sending_facility), "", "", "", "", _esc(actor.get("display", "")))
            segments.append(f"AIL|{ail}|A|{place}")
    return "\r".join(segments).encode("utf-8")
