"""When a message's event happened: the time carebridge orders HL7 v2 events by.

HL7 v2 has no ordering rule: messages are sent, retried and queued by each HIS
in its own way, and several MLLP connections deliver them in any order.  What
the message itself says is when its event occurred, so that is what decides
whether it is newer than the state it would change (the same reason NHS event
sequencing uses event timestamps).  The event time is, in order:

* EVN-2 "Recorded Date/Time" (HL7 v2.5.1 ch. 3.4.1.2): when the event was
  entered in the sending system -- the event time every ADT message carries;
* EVN-6 "Event Occurred" (ch. 3.4.1.6) when EVN-2 is blank;
* MSH-7 "Date/Time of Message" (ch. 2.14.9.7, required) otherwise (SIU has no EVN).

A value without a UTC offset is Vietnam time (``mappers.datatypes.VN_OFFSET``),
as everywhere else in the mappers.  A value that is not a valid DTM is refused
(AE naming the field): ordering by a guessed time would be worse than asking.
"""

from __future__ import annotations

from datetime import datetime

from mappers.datatypes import ts_to_instant
from mappers.hl7_message import Hl7Message

_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")


def event_instant(msg: Hl7Message) -> str | None:
    """The event time as a FHIR instant with its offset (EVN-2, else EVN-6, else MSH-7)."""
    evn = msg.segment("EVN")
    candidates = (
        (evn.component(2) if evn else "", "EVN-2"),
        (evn.component(6) if evn else "", "EVN-6"),
        (msg.header.datetime, "MSH-7"),
    )
    for value, location in candidates:
        if value.strip():
            return ts_to_instant(value, location=location)
    return None


def instant_to_us(instant: str) -> int:
    """Microseconds since the epoch (UTC) of an instant from :func:`event_instant`."""
    delta = datetime.fromisoformat(instant) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
