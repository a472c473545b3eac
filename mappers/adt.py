"""ADT → Patient / Encounter / $merge transaction entries.

Segment maps: PID→Patient
(https://hl7.org/fhir/uv/v2mappings/ConceptMap-segment-pid-to-patient.html),
PV1→Encounter (https://hl7.org/fhir/uv/v2mappings/ConceptMap-segment-pv1-to-encounter.html),
message maps ADT_A01/A03/A40 (https://hl7.org/fhir/uv/v2mappings/message_maps.html).

Why conditional requests: the HIS is the source of truth for demographics and
visits, and the mapper must stay pure.  Events that carry a full demographic
picture (A01/A04/A05/A08/A28/A31) *replace* the Patient (conditional PUT by
record number); the others only create it when unknown (conditional POST) so
a thin PID never wipes data.  Encounters are keyed by visit number (PV1-19).
"""

from __future__ import annotations

from common import RequiredFieldMissing, UnsupportedMessageType, alternate_visit_system, visit_system
from mappers.datatypes import (
    JSON,
    cwe_to_codeable_concept,
    cx_to_identifier,
    pl_display,
    ts_to_datetime,
    xcn_to_reference,
)
from mappers.hl7_message import Hl7Message, Segment, cx_authority
from mappers.patient import patient_identity, pid_to_patient, require_pid
from mappers.result import BundleBuilder

FULL_UPDATE_EVENTS = frozenset({"A01", "A04", "A05", "A08", "A28", "A31"})
"""Events whose PID is a full demographic record: Patient conditional PUT."""

IN_VISIT_EVENTS = frozenset({"A09", "A10", "A12", "A15", "A16", "A25", "A26"})
"""Events during a visit that is going on: ``in-progress``, and PV1-45 is never its end.

Patient tracking (A09/A10), cancel transfer (A12), pending transfer (A15/A26) and
pending discharge (A16/A25): a PV1-45 on a pending discharge is the *expected*
time, so it must not finish the visit (``finished`` fires "service completed").
"""

ENCOUNTER_STATE_EVENTS = (
    frozenset({"A01", "A02", "A03", "A04", "A05", "A06", "A07", "A11", "A13", "A14", "A27", "A38", "A45"})
    | IN_VISIT_EVENTS
)
"""Events that define the visit state: Encounter conditional PUT.  Others (A08...) only create it."""

MERGE_EVENTS = frozenset({"A40", "A47"})
"""``Patient/$merge`` of MRG-1 into PID-3: merge (A40) and change of identifier list (A47)."""

SUPPORTED_EVENTS = FULL_UPDATE_EVENTS | ENCOUNTER_STATE_EVENTS | MERGE_EVENTS | {"A29", "A37"}

_STATUS = {
    "A05": "planned",  # pre-admit
    "A11": "cancelled",  # cancel admit
    "A13": "in-progress",  # cancel discharge: the visit is open again
    "A14": "planned",  # pending admit
    "A27": "cancelled",  # cancel pending admit
    "A38": "cancelled",  # cancel pre-admit
}
"""Encounter.status fixed by the trigger (IG ConceptMap table-hl70003-to-encounter-status)."""

V3_ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
V3_PARTICIPATION = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
V2_0112 = "http://terminology.hl7.org/CodeSystem/v2-0112"

# PV1-2 patient class (table 0004) → v3 ActCode, per IG ConceptMap table-hl70004-to-v3-ActCode
_CLASS = {
    "I": ("IMP", "inpatient encounter"),
    "O": ("AMB", "ambulatory"),
    "E": ("EMER", "emergency"),
    "P": ("PRENC", "pre-admission"),
    "R": ("AMB", "ambulatory"),
    "B": ("IMP", "inpatient encounter"),
}
# PV1-7/8/9/17 → Encounter.participant.type (v3 ParticipationType)
_PARTICIPANTS = (
    (7, "ATND", "attender"),
    (8, "REF", "referrer"),
    (9, "CON", "consultant"),
    (17, "ADM", "admitter"),
)


def map_adt(msg: Hl7Message, trigger: str, builder: BundleBuilder) -> None:
    """Append the entries for one ADT message to ``builder``."""
    if trigger not in SUPPORTED_EVENTS:
        raise UnsupportedMessageType(f"ADT^{trigger} is not processed", location="MSH-9.2", event=True)
    pid = require_pid(msg)
    system, value = patient_identity(msg, pid)
    patient = pid_to_patient(msg, pid)
    if trigger == "A29":
        # Delete person information: a medical record is never deleted (retention,
        # consent/retention.py); the record is kept and marked no longer in use.
        patient["active"] = False
        builder.put(patient, system, value)
        return
    if trigger in MERGE_EVENTS:
        _merge(msg, builder)
        return
    if trigger == "A37":
        _unlink(msg, builder)
        return
    if trigger in FULL_UPDATE_EVENTS:
        patient_ref = builder.put(patient, system, value)
    else:
        patient_ref = builder.create_if_absent(patient, system, value)
    pv1 = msg.segment("PV1")
    if pv1 is not None:
        _encounter(msg, trigger, pv1, patient_ref, builder)


def _merge(msg: Hl7Message, builder: BundleBuilder) -> None:
    """A40/A47: every PID/MRG pair merges MRG-1 (source) into PID-3 (target) via ``Patient/$merge``.

    HL7 v2.5.1 ch. 3.3.40 (message structure ADT_A39) repeats the PID/PD1/MRG/PV1
    group: one message may retire several duplicates, and all of them go into the
    one transaction so a message is applied whole or not at all.  A survivor
    named by several pairs is created (if unknown) once.
    """
    facility = msg.header.sending_facility
    pids, mrgs = msg.segments("PID"), msg.segments("MRG")
    if len(mrgs) < len(pids):
        raise RequiredFieldMissing("every PID of a merge needs its MRG segment", location="MRG")
    survivors: set[tuple[str, str]] = set()
    for pid, mrg in zip(pids, mrgs, strict=False):
        reps = mrg.repetitions(1)
        chosen = next((r for r in reps if r.component(5).strip().upper() == "MR"), reps[0] if reps else None)
        source = cx_to_identifier(chosen, default_authority=facility) if chosen else None
        if source is None:
            raise RequiredFieldMissing("MRG-1 (prior patient identifier) is empty", location="MRG-1")
        system, value = patient_identity(msg, pid)
        patient = pid_to_patient(msg, pid)
        if (system, value) not in survivors:
            survivors.add((system, value))
            builder.create_if_absent(patient, system, value)
        target = next(i for i in patient["identifier"] if i["system"] == system and i["value"] == value)
        parameters: JSON = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "source-patient-identifier", "valueIdentifier": source},
                {"name": "target-patient-identifier", "valueIdentifier": target},
            ],
        }
        builder.add(parameters, {"method": "POST", "url": "Patient/$merge"})


def _unlink(msg: Hl7Message, builder: BundleBuilder) -> None:
    """A37: undo the link between the two patients named by the two PID segments.

    HL7 v2.5.1 ch. 3.3.37 (structure ADT_A37: PID, PD1, PV1, DB1 twice).  In FHIR
    terms (Patient.link) the pair's links are removed in both directions and a
    record that was ``replaced-by`` the other is active again.  Encounters moved
    by the merge stay with the survivor: the message does not say whose they were.
    """
    pids = msg.segments("PID")
    if len(pids) < 2:
        raise RequiredFieldMissing("A37 needs the second patient's PID segment", location="PID")
    parameters: JSON = {"resourceType": "Parameters", "parameter": []}
    for name, pid in (("patient-identifier", pids[0]), ("other-patient-identifier", pids[1])):
        system, value = patient_identity(msg, pid)
        parameters["parameter"].append({"name": name, "valueIdentifier": {"system": system, "value": value}})
    builder.add(parameters, {"method": "POST", "url": "Patient/$unlink"})


def _encounter(msg: Hl7Message, trigger: str, pv1: Segment, patient_ref: str, builder: BundleBuilder) -> None:
    visit = pv1.repetition(19)
    if trigger == "A45" and not visit.component(1).strip():
        mrg = msg.segment("MRG")
        if mrg is not None:
            visit = mrg.repetition(5)  # MRG-5 prior visit number: the visit that moves
    visit_number = visit.component(1).strip()
    if not visit_number:
        if trigger in ("A03", "A45"):
            raise RequiredFieldMissing(f"{trigger} needs a visit number", location="PV1-19")
        return
    system = visit_system(cx_authority(visit, msg.header.sending_facility))
    start = ts_to_datetime(pv1.component(44), location="PV1-44")
    end = ts_to_datetime(pv1.component(45), location="PV1-45")
    if trigger == "A03" and not end:
        evn = msg.segment("EVN")
        end = ts_to_datetime(evn.component(2) if evn else "", location="EVN-2") or ts_to_datetime(
            msg.header.datetime, location="MSH-7"
        )
    if trigger == "A13" or trigger in IN_VISIT_EVENTS:
        end = None  # cancel discharge: open again; pending discharge: PV1-45 is only expected
    status = _status(trigger, end is not None, start is not None)

    identifiers: list[JSON] = [{"system": system, "value": visit_number}]
    alternate = pv1.repetition(50)
    if alternate.component(1).strip():
        authority = cx_authority(alternate, msg.header.sending_facility)
        identifiers.append(
            {
                "use": "secondary",
                "system": alternate_visit_system(authority),
                "value": alternate.component(1).strip(),
            }
        )
    enc: JSON = {
        "resourceType": "Encounter",
        "identifier": identifiers,
        "status": status,
        "class": _class(pv1.component(2).strip().upper()),
        "subject": {"reference": patient_ref},
    }
    service = cwe_to_codeable_concept(pv1.repetition(10))
    if service:
        enc["serviceType"] = service
    participants = []
    for n, code, display in _PARTICIPANTS:
        for rep in pv1.repetitions(n):
            ref = xcn_to_reference(rep, default_authority=msg.header.sending_facility)
            if ref:
                kind = {"coding": [{"system": V3_PARTICIPATION, "code": code, "display": display}]}
                participants.append({"type": [kind], "individual": ref})
    if participants:
        enc["participant"] = participants
    period: JSON = {}
    if start:
        period["start"] = start
    if end:
        period["end"] = end
    if period:
        enc["period"] = period
    locations = _locations(trigger, pv1, status, end is not None)
    if locations:
        enc["location"] = locations
    disposition = pv1.component(36).strip()
    if disposition:
        enc["hospitalization"] = {
            "dischargeDisposition": {"coding": [{"system": V2_0112, "code": disposition}]}
        }
    if trigger in ENCOUNTER_STATE_EVENTS:
        builder.put(enc, system, visit_number)
    else:
        builder.create_if_absent(enc, system, visit_number)


def _locations(trigger: str, pv1: Segment, status: str, has_end: bool) -> list[JSON]:
    """Encounter.location with its status (planned | active | reserved | completed).

    PV1-3 is where the patient is assigned.  A02 adds the prior location (PV1-6)
    ``completed``; a pending transfer (A15) the pending location (PV1-42)
    ``planned``.  Patient tracking (HL7 v2.5.1 ch. 3.3.9/3.3.10) moves the patient
    without changing the assignment: on departure (A09) the assigned bed is kept
    (``reserved``) and the destination, PV1-11 temporary or PV1-42 pending
    location, is ``planned``; on arrival (A10) a temporary location PV1-11 becomes
    ``active`` with the assigned bed ``reserved``, else PV1-3 is ``active``.
    """
    current = pl_display(pv1.repetition(3))
    temporary = pl_display(pv1.repetition(11))
    pending = pl_display(pv1.repetition(42))
    out: list[tuple[str, str]] = []
    if trigger == "A09":
        out = [(current, "reserved"), (temporary or pending, "planned")]
    elif trigger == "A10":
        out = [(current, "reserved"), (temporary, "active")] if temporary else [(current, "active")]
    else:
        state = "planned" if status == "planned" else "completed" if has_end else "active"
        out = [(current, state)]
        if trigger == "A02":
            out.append((pl_display(pv1.repetition(6)), "completed"))
        if trigger == "A15":
            out.append((pending, "planned"))
    return [{"location": {"display": label}, "status": state} for label, state in out if label]


def _status(trigger: str, has_end: bool, has_start: bool) -> str:
    """Encounter.status per trigger (fixed ones in ``_STATUS``, else PV1-45 = finished).

    A05 (pre-admit) and A14 (pending admit) are ``planned`` even with PV1-45 (an
    expected discharge on a visit that has not begun), and the in-visit events
    never carry an end: only a real discharge may finish a visit, since
    ``finished`` is the "service completed" trigger for post-visit care.  A45
    (move visit) restates the visit as the HIS holds it: finished only if it was
    discharged (PV1-45), which the store already knows, so nothing fires again.
    """
    if trigger in _STATUS:
        return _STATUS[trigger]
    if has_end:
        return "finished"
    if trigger in ENCOUNTER_STATE_EVENTS:
        return "in-progress"
    return "in-progress" if has_start else "unknown"


def _class(patient_class: str) -> JSON:
    code = _CLASS.get(patient_class)
    if code is None:
        return {
            "system": "http://terminology.hl7.org/CodeSystem/v3-NullFlavor",
            "code": "UNK",
            "display": "unknown",
        }
    return {"system": V3_ACT_CODE, "code": code[0], "display": code[1]}
