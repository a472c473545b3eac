"""Entry point: route a tokenized message to its mapper by MSH-9."""

from __future__ import annotations

from collections.abc import Callable

from common import MessageIgnored, UnsupportedMessageType
from mappers.adt import map_adt
from mappers.event_time import event_instant, instant_to_us
from mappers.hl7_message import Hl7Message, patient_key
from mappers.result import BundleBuilder, MappingResult
from mappers.siu import map_siu
from mappers.triggers import ignore_reason

_MAPPERS: dict[str, Callable[[Hl7Message, str, BundleBuilder], None]] = {"ADT": map_adt, "SIU": map_siu}

SUPPORTED_MESSAGE_TYPES = frozenset(_MAPPERS)


def map_message(msg: Hl7Message, *, new_id: Callable[[], str] | None = None) -> MappingResult:
    """Map ADT/SIU to a FHIR transaction Bundle.

    Raises :class:`MessageIgnored` (AA, journaled ``ignored``) for an ADT/SIU
    trigger of HL7 table 0003 that carries nothing carebridge stores
    (:mod:`mappers.triggers`), :class:`UnsupportedMessageType` (AR) for other
    message types (location MSH-9) or triggers (location MSH-9.2), and the
    :class:`~common.errors.InvalidInput` family (AE) for bad content.
    ``new_id`` overrides the uuid4 factory used for ``urn:uuid`` fullUrls.
    """
    code = msg.header.message_code.strip().upper()
    mapper = _MAPPERS.get(code)
    if mapper is None:
        raise UnsupportedMessageType(f"message type {code or '(empty)'} is not processed", location="MSH-9")
    trigger = msg.header.trigger_event.strip().upper()
    if not trigger:
        evn = msg.segment("EVN")
        trigger = evn.field(1).strip().upper() if evn else ""
    reason = ignore_reason(code, trigger)
    if reason is not None:
        raise MessageIgnored(reason, location="MSH-9.2")
    builder = BundleBuilder() if new_id is None else BundleBuilder(new_id=new_id)
    when = event_instant(msg)
    mapper(msg, trigger, builder)
    return MappingResult(
        bundle=builder.bundle(),
        event=f"{code}^{trigger}",
        patient_key=patient_key(msg),
        event_time=when,
        event_time_us=None if when is None else instant_to_us(when),
    )
