"""PID (+ NK1) → Patient, after the IG segment map
https://hl7.org/fhir/uv/v2mappings/ConceptMap-segment-pid-to-patient.html
and https://hl7.org/fhir/uv/v2mappings/ConceptMap-segment-nk1-to-patient.html
"""

from __future__ import annotations

from common import RequiredFieldMissing
from mappers.datatypes import (
    JSON,
    cwe_to_codeable_concept,
    cx_to_identifier,
    identifier_system,
    ts_to_date,
    ts_to_datetime,
    xad_to_address,
    xpn_to_human_name,
    xtn_to_contact_point,
)
from mappers.hl7_message import Hl7Message, Segment, cx_authority, primary_cx

_GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "N": "other", "U": "unknown"}
_MARITAL = {"A", "D", "I", "L", "M", "P", "S", "T", "U", "W", "C"}
V3_MARITAL = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus"


def patient_identity(msg: Hl7Message, pid: Segment) -> tuple[str, str]:
    """(system, value) the Patient is upserted by: the record number of PID-3 (``primary_cx``)."""
    rep = primary_cx(pid)
    if rep is None:
        if any(r.component(1).strip() for r in pid.repetitions(3)):
            raise RequiredFieldMissing(
                "PID-3 holds no record number (identifier type MR or PI)", location="PID-3"
            )
        raise RequiredFieldMissing("PID-3 (patient identifier list) is empty", location="PID-3")
    authority = cx_authority(rep, msg.header.sending_facility)
    return identifier_system(rep.component(5).strip(), authority), rep.component(1).strip()


def require_pid(msg: Hl7Message) -> Segment:
    pid = msg.segment("PID")
    if pid is None:
        raise RequiredFieldMissing("PID segment is missing", location="PID")
    return pid


def pid_to_patient(msg: Hl7Message, pid: Segment) -> JSON:
    """Build the Patient resource (no id/meta: the store assigns them)."""
    facility = msg.header.sending_facility
    patient: JSON = {"resourceType": "Patient"}
    identifiers = []
    seen: set[tuple[str, str]] = set()
    for n in (2, 3, 4):
        for rep in pid.repetitions(n):
            ident = cx_to_identifier(rep, default_authority=facility)
            if ident and (ident["system"], ident["value"]) not in seen:
                seen.add((ident["system"], ident["value"]))
                identifiers.append(ident)
    if not identifiers:
        raise RequiredFieldMissing("PID-3 (patient identifier list) is empty", location="PID-3")
    patient["identifier"] = identifiers
    patient["active"] = True
    names = [n for n in (xpn_to_human_name(r) for r in pid.repetitions(5)) if n]
    if names:
        patient["name"] = names
    telecom = [c for c in (xtn_to_contact_point(r) for r in pid.repetitions(13)) if c]
    for rep in pid.repetitions(14):
        cp = xtn_to_contact_point(rep)
        if cp:
            cp.setdefault("use", "work")
            telecom.append(cp)
    # PID-40 (v2.7+): the one telecom field once PID-13/14 were withdrawn; senders in transition
    # fill both, so a number already read from PID-13/14 is not repeated.
    seen = {(c["system"], c["value"]) for c in telecom}
    for rep in pid.repetitions(40):
        cp = xtn_to_contact_point(rep)
        if cp and (cp["system"], cp["value"]) not in seen:
            seen.add((cp["system"], cp["value"]))
            telecom.append(cp)
    if telecom:
        patient["telecom"] = telecom
    gender = _GENDER.get(pid.component(8).strip().upper())
    if gender:
        patient["gender"] = gender
    birth = ts_to_date(pid.component(7), location="PID-7")
    if birth:
        patient["birthDate"] = birth
    deceased_at = ts_to_datetime(pid.component(29), location="PID-29")
    if deceased_at:
        patient["deceasedDateTime"] = deceased_at
    elif pid.field(30).strip().upper() == "Y":
        patient["deceasedBoolean"] = True
    addresses = [a for a in (xad_to_address(r) for r in pid.repetitions(11)) if a]
    if addresses:
        patient["address"] = addresses
    marital = pid.component(16).strip().upper()
    if marital:
        if marital in _MARITAL:
            patient["maritalStatus"] = {"coding": [{"system": V3_MARITAL, "code": marital}]}
        else:
            patient["maritalStatus"] = {"text": marital}
    contacts = [c for c in (_nk1_contact(seg) for seg in msg.segments("NK1")) if c]
    if contacts:
        patient["contact"] = contacts
    return patient


def _nk1_contact(nk1: Segment) -> JSON | None:
    contact: JSON = {}
    names = [n for n in (xpn_to_human_name(r) for r in nk1.repetitions(2)) if n]
    if names:
        contact["name"] = names[0]
    relationship = [c for c in (cwe_to_codeable_concept(r) for r in nk1.repetitions(3)) if c]
    if relationship:
        contact["relationship"] = relationship
    telecom = [c for c in (xtn_to_contact_point(r) for r in nk1.repetitions(5)) if c]
    if telecom:
        contact["telecom"] = telecom
    address = [a for a in (xad_to_address(r) for r in nk1.repetitions(4)) if a]
    if address:
        contact["address"] = address[0]
    return contact or None
