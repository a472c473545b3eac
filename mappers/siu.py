"""SIU → Appointment (+ Patient conditional create).

Segment maps: SCH→Appointment
(https://hl7.org/fhir/uv/v2mappings/ConceptMap-segment-sch-to-appointment.html),
AIS/AIP/AIL→Appointment (service type and participants), filler status table
0278 → AppointmentStatus.  The Patient is only created when unknown: a SIU
carries a thin PID and must not overwrite ADT demographics.
"""

from __future__ import annotations

from common import (
    RequiredFieldMissing,
    UnsupportedMessageType,
    filler_appointment_system,
    placer_appointment_system,
)
from mappers.datatypes import (
    JSON,
    add_minutes,
    cwe_to_codeable_concept,
    pl_display,
    ts_to_instant,
    xcn_to_reference,
)
from mappers.hl7_message import Hl7Message, Repetition, Segment
from mappers.patient import patient_identity, pid_to_patient, require_pid
from mappers.result import BundleBuilder

EVENT_STATUS = {
    "S12": "booked",
    "S13": "booked",  # rescheduled: new period
    "S14": "booked",  # modified
    "S15": "cancelled",
    "S17": "entered-in-error",  # deleted
    "S26": "noshow",
}
SUPPORTED_EVENTS = frozenset(EVENT_STATUS)

# SCH-25 filler status code (HL7 table 0278) → AppointmentStatus
FILLER_STATUS = {
    "PENDING": "pending",
    "WAITLIST": "waitlist",
    "BOOKED": "booked",
    "OVERBOOK": "booked",
    "STARTED": "arrived",
    "COMPLETE": "fulfilled",
    "CANCELLED": "cancelled",
    "DC": "cancelled",
    "DELETED": "entered-in-error",
    "NOSHOW": "noshow",
}

_MINUTES = {"MIN": 1, "M": 1, "MINUTE": 1, "H": 60, "HR": 60, "HOUR": 60, "D": 1440, "S": 0}


def map_siu(msg: Hl7Message, trigger: str, builder: BundleBuilder) -> None:
    """Append the entries for one SIU message to ``builder``."""
    if trigger not in SUPPORTED_EVENTS:
        raise UnsupportedMessageType(f"SIU^{trigger} is not processed", location="MSH-9.2", event=True)
    sch = msg.segment("SCH")
    if sch is None:
        raise RequiredFieldMissing("SCH segment is missing", location="SCH")
    pid = require_pid(msg)
    system, value = patient_identity(msg, pid)
    patient_ref = builder.create_if_absent(pid_to_patient(msg, pid), system, value)

    facility = msg.header.sending_facility
    identifiers = []
    filler = sch.repetition(2)
    placer = sch.repetition(1)
    if filler.component(1).strip():
        fsys = filler_appointment_system(filler.component(2).strip() or facility)
        identifiers.append({"system": fsys, "value": filler.component(1).strip()})
    if placer.component(1).strip():
        psys = placer_appointment_system(placer.component(2).strip() or facility)
        identifiers.append({"system": psys, "value": placer.component(1).strip()})
    if not identifiers:
        raise RequiredFieldMissing("SCH-2 (filler appointment id) is empty", location="SCH-2")

    status = EVENT_STATUS[trigger]
    filler_status = sch.component(25).strip().upper()
    if filler_status in FILLER_STATUS:
        status = FILLER_STATUS[filler_status]

    appt: JSON = {"resourceType": "Appointment", "identifier": identifiers, "status": status}
    reason = cwe_to_codeable_concept(sch.repetition(7))
    if reason:
        appt["reasonCode"] = [reason]
        appt["description"] = reason["text"]
    kind = cwe_to_codeable_concept(sch.repetition(8))
    if kind:
        appt["appointmentType"] = kind
    ais = msg.segments("AIS")
    services = [c for c in (cwe_to_codeable_concept(s.repetition(3)) for s in ais if _kept(s)) if c]
    if services:
        appt["serviceType"] = services
    start, end, minutes = _timing(sch, [s for s in ais if _kept(s)])
    if start:
        appt["start"] = start
    if end:
        appt["end"] = end
    if minutes:
        appt["minutesDuration"] = minutes

    participants: list[JSON] = [
        {"actor": {"reference": patient_ref, "type": "Patient"}, "required": "required", "status": "accepted"}
    ]
    for aip in msg.segments("AIP"):
        if not _kept(aip):
            continue
        for rep in aip.repetitions(3):
            ref = xcn_to_reference(rep, default_authority=facility)
            if ref:
                part: JSON = {"actor": ref, "required": "required", "status": "accepted"}
                role = cwe_to_codeable_concept(aip.repetition(4))
                if role:
                    part["type"] = [role]
                participants.append(part)
    for ail in msg.segments("AIL"):
        if not _kept(ail):
            continue
        for rep in ail.repetitions(3):
            label = pl_display(rep)
            if label:
                actor = {"type": "Location", "display": label}
                participants.append({"actor": actor, "required": "required", "status": "accepted"})
    appt["participant"] = participants
    key_system, key_value = identifiers[0]["system"], identifiers[0]["value"]
    builder.put(appt, key_system, key_value)


def _kept(seg: Segment) -> bool:
    """AIx-2 segment action code D = delete this resource from the appointment."""
    return seg.field(2).strip().upper() != "D"


def _duration_minutes(amount: str, unit: Repetition) -> int | None:
    if not amount.strip().isdigit():
        return None
    factor = _MINUTES.get((unit.component(1).strip() or "MIN").upper())
    if factor is None:
        return None
    return int(amount) * factor if factor else int(amount) // 60


def _timing(sch: Segment, ais: list[Segment]) -> tuple[str | None, str | None, int | None]:
    """Start/end from SCH-11 TQ.4/TQ.5, else AIS-4 + AIS-7 duration, else SCH-9 duration."""
    tq = sch.repetition(11)
    start = ts_to_instant(tq.component(4), location="SCH-11.4")
    end = ts_to_instant(tq.component(5), location="SCH-11.5")
    minutes = _duration_minutes(sch.field(9), sch.repetition(10))
    for seg in ais:
        if not start:
            start = ts_to_instant(seg.component(4), location="AIS-4")
        if minutes is None:
            minutes = _duration_minutes(seg.field(7), seg.repetition(8))
    if start and not end and minutes:
        end = add_minutes(start, minutes)
    return start, end, minutes
