"""Every ADT and SIU trigger event (HL7 v2.5.1 table 0003) and what carebridge does with it.

Why a catalogue: a receiver that answers AR to a trigger it has no use for
stops many HIS outbound queues until a person intervenes, although nothing is
wrong with the message.  So a trigger of table 0003 is either mapped (the
``SUPPORTED_EVENTS`` of :mod:`mappers.adt` and :mod:`mappers.siu`) or
accepted and journaled ``ignored`` with the reason below (AA, ERR severity I);
only a code that is not in the table is refused (AR, table 0357 code 201).
docs/hl7-mapping.md lists the same table (a test compares them).
"""

from __future__ import annotations

from mappers.adt import SUPPORTED_EVENTS as ADT_SUPPORTED
from mappers.siu import SUPPORTED_EVENTS as SIU_SUPPORTED

ADT_EVENTS: dict[str, str] = {
    "A01": "Admit/visit notification",
    "A02": "Transfer a patient",
    "A03": "Discharge/end visit",
    "A04": "Register a patient",
    "A05": "Pre-admit a patient",
    "A06": "Change an outpatient to an inpatient",
    "A07": "Change an inpatient to an outpatient",
    "A08": "Update patient information",
    "A09": "Patient departing - tracking",
    "A10": "Patient arriving - tracking",
    "A11": "Cancel admit/visit notification",
    "A12": "Cancel transfer",
    "A13": "Cancel discharge/end visit",
    "A14": "Pending admit",
    "A15": "Pending transfer",
    "A16": "Pending discharge",
    "A17": "Swap patients",
    "A18": "Merge patient information",
    "A19": "Patient query",
    "A20": "Bed status update",
    "A21": "Patient goes on a leave of absence",
    "A22": "Patient returns from a leave of absence",
    "A23": "Delete a patient record",
    "A24": "Link patient information",
    "A25": "Cancel pending discharge",
    "A26": "Cancel pending transfer",
    "A27": "Cancel pending admit",
    "A28": "Add person information",
    "A29": "Delete person information",
    "A30": "Merge person information",
    "A31": "Update person information",
    "A32": "Cancel patient arriving - tracking",
    "A33": "Cancel patient departing - tracking",
    "A34": "Merge patient information - patient ID only",
    "A35": "Merge patient information - account number only",
    "A36": "Merge patient information - patient ID and account number",
    "A37": "Unlink patient information",
    "A38": "Cancel pre-admit",
    "A39": "Merge person - patient ID",
    "A40": "Merge patient - patient identifier list",
    "A41": "Merge account - patient account number",
    "A42": "Merge visit - visit number",
    "A43": "Move patient information - patient identifier list",
    "A44": "Move account information - patient account number",
    "A45": "Move visit information - visit number",
    "A46": "Change patient ID",
    "A47": "Change patient identifier list",
    "A48": "Change alternate patient ID",
    "A49": "Change patient account number",
    "A50": "Change visit number",
    "A51": "Change alternate visit ID",
    "A52": "Cancel leave of absence for a patient",
    "A53": "Cancel patient returns from a leave of absence",
    "A54": "Change attending doctor",
    "A55": "Cancel change attending doctor",
    "A60": "Update allergy information",
    "A61": "Change consulting doctor",
    "A62": "Cancel change consulting doctor",
}

SIU_EVENTS: dict[str, str] = {
    "S12": "Notification of new appointment booking",
    "S13": "Notification of appointment rescheduling",
    "S14": "Notification of appointment modification",
    "S15": "Notification of appointment cancellation",
    "S16": "Notification of appointment discontinuation",
    "S17": "Notification of appointment deletion",
    "S18": "Notification of addition of service/resource on appointment",
    "S19": "Notification of modification of service/resource on appointment",
    "S20": "Notification of cancellation of service/resource on appointment",
    "S21": "Notification of discontinuation of service/resource on appointment",
    "S22": "Notification of deletion of service/resource on appointment",
    "S23": "Notification of blocked schedule time slot(s)",
    "S24": "Notification of opened (unblocked) schedule time slot(s)",
    "S26": "Notification that patient did not show up for scheduled appointment",
}

_ACCOUNTS = "patient accounts (PID-18) are not stored"
_MERGE_TODO = "this merge/move variant is not applied; the HIS sends A40/A45 for what carebridge stores"
_WITHDRAWN = "withdrawn from HL7 v2 (use A40/A47); nothing to apply"
_DOCTOR = "attending/consulting doctor changes are not applied on their own; the next A08 restates PV1"
_LEAVE = "leave of absence is not tracked; the visit stays in progress"

IGNORE_REASONS: dict[str, str] = {
    "ADT^A17": "bed swaps are not applied: the next A02/A08 of each patient restates the location",
    "ADT^A18": _WITHDRAWN,
    "ADT^A19": "a query, not a notification: carebridge answers no HL7 queries",
    "ADT^A20": "bed status is not stored",
    "ADT^A21": _LEAVE,
    "ADT^A22": _LEAVE,
    "ADT^A23": "visit deletion is not applied: medical records are kept (retention)",
    "ADT^A24": "patient links are not stored",
    "ADT^A30": _WITHDRAWN,
    "ADT^A32": "cancelled tracking is not applied: the next A09/A10 restates the location",
    "ADT^A33": "cancelled tracking is not applied: the next A09/A10 restates the location",
    "ADT^A34": _WITHDRAWN,
    "ADT^A35": _WITHDRAWN,
    "ADT^A36": _WITHDRAWN,
    "ADT^A39": _WITHDRAWN,
    "ADT^A41": _ACCOUNTS,
    "ADT^A42": _MERGE_TODO,
    "ADT^A43": _MERGE_TODO,
    "ADT^A44": _ACCOUNTS,
    "ADT^A46": _WITHDRAWN,
    "ADT^A48": _WITHDRAWN,
    "ADT^A49": _ACCOUNTS,
    "ADT^A50": "visit number changes are not applied: the visit keeps its first number",
    "ADT^A51": "alternate visit id changes are not applied on their own; the next A08 restates PV1-50",
    "ADT^A52": _LEAVE,
    "ADT^A53": _LEAVE,
    "ADT^A54": _DOCTOR,
    "ADT^A55": _DOCTOR,
    "ADT^A60": "allergies are not stored (no AllergyIntolerance)",
    "ADT^A61": _DOCTOR,
    "ADT^A62": _DOCTOR,
    "SIU^S18": "service/resource changes are not applied on their own; S14 restates the appointment",
    "SIU^S19": "service/resource changes are not applied on their own; S14 restates the appointment",
    "SIU^S20": "service/resource changes are not applied on their own; S14 restates the appointment",
    "SIU^S21": "service/resource changes are not applied on their own; S14 restates the appointment",
    "SIU^S22": "service/resource changes are not applied on their own; S14 restates the appointment",
    "SIU^S23": "schedule slots are not stored (no Slot/Schedule)",
    "SIU^S24": "schedule slots are not stored (no Slot/Schedule)",
}

_CATALOGUE = {"ADT": (ADT_EVENTS, ADT_SUPPORTED), "SIU": (SIU_EVENTS, SIU_SUPPORTED)}


def ignore_reason(code: str, trigger: str) -> str | None:
    """Why ``code^trigger`` is accepted without effect; ``None`` when mapped or not in table 0003."""
    events, supported = _CATALOGUE.get(code, ({}, frozenset()))
    if trigger not in events or trigger in supported:
        return None
    return f"{code}^{trigger} ({events[trigger]}) ignored: " + IGNORE_REASONS.get(
        f"{code}^{trigger}", "nothing carebridge stores"
    )


def catalogue() -> list[tuple[str, str, str]]:
    """(``ADT^A01``, name, ``mapped`` | the ignore reason) for every ADT and SIU trigger."""
    rows = []
    for code, (events, supported) in _CATALOGUE.items():
        for trigger, name in events.items():
            key = f"{code}^{trigger}"
            rows.append((key, name, "mapped" if trigger in supported else IGNORE_REASONS[key]))
    return rows
