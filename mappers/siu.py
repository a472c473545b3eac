"""SIU → Appointment (+ Patient conditional create).

Segment maps: SCH→Appointment
(https://hl7.org/fhir/uv/v2mappings/ConceptMap-segment-sch-to-appointment.html),
AIS/AIG/AIL/AIP→Appointment (service type and participants: AIP practitioner,
AIL location, AIG other resources), TQ1/AIx/SCH-11 timing in
:mod:`mappers.siu_timing`, filler status table 0278 → AppointmentStatus.  The Patient is only created when unknown: a SIU
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
    cwe_to_codeable_concept,
    pl_display,
    xcn_to_reference,
)
from mappers.hl7_message import Hl7Message, Segment
from mappers.patient import patient_identity, pid_to_patient, require_pid
from mappers.result import BundleBuilder
from mappers.siu_timing import appointment_timing
from mappers.siu_timing import kept as _kept

EVENT_STATUS = {
    "S12": "booked",
    "S13": "booked",  # rescheduled: new period
    "S14": "booked",  # modified
    "S15": "cancelled",
    "S16": "cancelled",  # discontinued: stopped and will not be completed (table 0278 DC -> cancelled)
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
    timing = appointment_timing(msg, sch, status)
    if timing.start and timing.end:
        appt["start"], appt["end"] = timing.start, timing.end
    if timing.minutes:
        appt["minutesDuration"] = timing.minutes

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
    for aig in msg.segments("AIG"):
        if _kept(aig):
            participants += _general_resource(aig)
    appt["participant"] = participants
    key_system, key_value = identifiers[0]["system"], identifiers[0]["value"]
    builder.put(appt, key_system, key_value)


def _general_resource(aig: Segment) -> list[JSON]:
    """AIG → participant: AIG-4 resource type → type, AIG-3 resource id → actor display/identifier.

    A general resource (chair, X-ray unit, interpreter) has no FHIR resource of ours, so the
    actor is a logical reference (segment-aig-to-appointment: AIG-3 → participant.actor,
    AIG-4 → participant.type); app-1 needs a type or an actor, and AIG-4 is required.
    """
    resource = aig.repetition(3)
    code, label = resource.component(1).strip(), resource.component(2).strip()
    kind = cwe_to_codeable_concept(aig.repetition(4))
    if not code and not label and not kind:
        return []
    part: JSON = {"required": "required", "status": "accepted"}
    if code or label:
        actor: JSON = {"display": label or code}
        if code:
            actor["identifier"] = {"value": code}
        part["actor"] = actor
    if kind:
        part["type"] = [kind]
    return [part]
