"""When an SIU appointment takes place: Appointment.start/end/minutesDuration.

HL7 v2.5 moved appointment timing from SCH-11 (TQ) to the TQ1 segment that
follows SCH, and v2.7 withdrew SCH-11 (HL7 v2.7 ch. 10.6.1).  Real feeds send
the time in one or more of these places, read in this order:

1. TQ1-7 start and TQ1-8 end date/time (TQ1-6 service duration when no end);
2. AIS-4 start with the AIS-7/AIS-8 duration (HL7 v2.5.1 §10.6.3);
3. AIG-8, AIL-6 and AIP-6 start with AIG-11/12, AIL-9/10 and AIP-9/10 duration
   (§10.6.4-10.6.6; AIG-6 is a resource quantity, not a time);
4. SCH-11.4/.5 (TQ), for v2.3-2.6 only: a v2.7+ SCH-11 is withdrawn and
   whatever a sender still puts there is not the appointment time.

Within the resource segments the appointment spans from the earliest start to
the latest end.  When the chosen source has a start but no end, a duration
sent elsewhere (TQ1-6, SCH-9/10, AIS-7/8) gives the end.  Segments whose
action code (AIx-2) is D are ignored.  A time without UTC offset is taken as
Vietnam time, as everywhere else (:func:`mappers.datatypes.ts_to_instant`).

FHIR R4 Appointment invariants (https://hl7.org/fhir/R4/appointment.html):
app-2, start and end both or neither; app-3, only proposed, cancelled and
waitlist appointments may lack them.  A message that would break app-3 is
refused with AE naming the missing field; for the statuses app-3 exempts, a
start without any end or duration is left out (app-2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation

from common import InvalidInput, RequiredFieldMissing
from mappers.datatypes import ts_to_instant
from mappers.hl7_message import Hl7Message, Segment

UNTIMED_STATUSES = frozenset({"proposed", "cancelled", "waitlist"})  # FHIR R4 app-3

# Duration units (AIS-8, AIG-12, AIL-10, AIP-10, SCH-10, TQ1-6.2): ISO+/ANSI codes as
# HL7 v2 examples use them, UCUM (min, h, d, s, wk) and their common spellings.
_UNITS = {
    "S": timedelta(seconds=1),
    "SEC": timedelta(seconds=1),
    "M": timedelta(minutes=1),
    "MIN": timedelta(minutes=1),
    "MINUTE": timedelta(minutes=1),
    "MINUTES": timedelta(minutes=1),
    "H": timedelta(hours=1),
    "HR": timedelta(hours=1),
    "HOUR": timedelta(hours=1),
    "HOURS": timedelta(hours=1),
    "D": timedelta(days=1),
    "DAY": timedelta(days=1),
    "DAYS": timedelta(days=1),
    "WK": timedelta(weeks=1),
}
_MAX_DURATION = timedelta(days=366)  # nothing is booked for longer; larger values are garbage

# (segment, start field, duration field) of the resource segments; units follow the duration.
_RESOURCE_TIMING = (("AIG", 8, 11), ("AIL", 6, 9), ("AIP", 6, 9))


@dataclass(frozen=True)
class Timing:
    """The mapped times (FHIR instants) and the duration in whole minutes when one was sent."""

    start: str | None
    end: str | None
    minutes: int | None


def kept(seg: Segment) -> bool:
    """AIx-2 segment action code D = delete this resource from the appointment."""
    return seg.field(2).strip().upper() != "D"


def duration(amount: str, unit: str) -> timedelta | None:
    """NM amount + unit code (CE/CNE/CWE.1) → timedelta; no unit means minutes (the HL7 default)."""
    text = amount.strip()
    if not text:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        return None
    step = _UNITS.get((unit.strip() or "MIN").upper())
    if step is None or not value.is_finite() or value <= 0:
        return None
    seconds = value * Decimal(step.total_seconds())
    if seconds > Decimal(_MAX_DURATION.total_seconds()):
        return None
    return timedelta(seconds=int(seconds))


def plus(instant: str, delta: timedelta) -> str:
    """``instant`` + ``delta``, keeping the instant's UTC offset."""
    return (datetime.fromisoformat(instant) + delta).isoformat(timespec="seconds")


def _later(a: str, b: str) -> bool:
    return datetime.fromisoformat(a) > datetime.fromisoformat(b)


@dataclass(frozen=True)
class _Found:
    """One timed source: start, end (sent or start + its own duration), its duration, end field."""

    start: str
    end: str | None
    length: timedelta | None
    end_field: str


def _tq1(msg: Hl7Message) -> _Found | None:
    """The first TQ1 with a start (TQ1-7); TQ1-6 is a CQ whose units are CQ.2's first subcomponent."""
    for seg in msg.segments("TQ1"):
        start = ts_to_instant(seg.component(7), location="TQ1-7")
        if start:
            end = ts_to_instant(seg.component(8), location="TQ1-8")
            return _Found(start, end, duration(seg.component(6, 1), seg.component(6, 2, 1)), "TQ1-8")
    return None


def _segment_times(msg: Hl7Message, name: str, start_field: int, dur_field: int) -> list[_Found]:
    """Each kept segment with a start; its duration is field ``dur_field``, units the next field."""
    found = []
    for seg in msg.segments(name):
        if not kept(seg):
            continue
        start = ts_to_instant(seg.component(start_field), location=f"{name}-{start_field}")
        if start:
            length = duration(seg.field(dur_field), seg.component(dur_field + 1))
            end = plus(start, length) if length else None
            found.append(_Found(start, end, length, f"{name}-{dur_field}"))
    return found


def _span(found: list[_Found]) -> _Found:
    """Earliest start to latest end of several resources booked for one appointment."""
    first = found[0]
    start, end = first.start, first.end
    for item in found[1:]:
        if _later(start, item.start):
            start = item.start
        if item.end and (end is None or _later(item.end, end)):
            end = item.end
    if len(found) == 1 or end is None:
        return _Found(start, end, first.length, first.end_field)
    whole = datetime.fromisoformat(end) - datetime.fromisoformat(start)  # the span, not one service
    return _Found(start, end, whole, first.end_field)


def _sch11_defined(version: str) -> bool:
    """SCH-11 exists in v2.3-2.6 and was withdrawn in v2.7."""
    major_minor = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    return major_minor < (2, 7)


def appointment_timing(msg: Hl7Message, sch: Segment, status: str) -> Timing:
    """Start, end and minutes of the appointment, or :class:`RequiredFieldMissing` (app-3)."""
    ais = _segment_times(msg, "AIS", 4, 7)
    resources = [f for name, start, dur in _RESOURCE_TIMING for f in _segment_times(msg, name, start, dur)]
    tq1 = _tq1(msg)
    old_sch = _sch11_defined(msg.header.version)
    chosen: _Found | None = tq1 or (_span(ais) if ais else None) or (_span(resources) if resources else None)
    if chosen is None and old_sch:
        tq = sch.repetition(11)
        sch_start = ts_to_instant(tq.component(4), location="SCH-11.4")
        if sch_start:
            chosen = _Found(sch_start, ts_to_instant(tq.component(5), location="SCH-11.5"), None, "SCH-11.5")
    # A duration sent anywhere, most specific first, gives an end to a lone start.
    scheduled = duration(sch.field(9), sch.component(10))
    lengths = [chosen.length if chosen else None, tq1.length if tq1 else None, scheduled]
    declared = next((d for d in lengths + [f.length for f in ais] if d), None)

    start = chosen.start if chosen else None
    end = chosen.end if chosen else None
    end_field = chosen.end_field if chosen else "TQ1-8"
    if start and not end and declared:
        end = plus(start, declared)
    if start and end and _later(start, end):
        raise InvalidInput("the appointment ends before it starts", location=end_field)
    if status not in UNTIMED_STATUSES:
        if not start:
            others = "AIS-4, AIG-8, AIL-6, AIP-6" + (", SCH-11.4" if old_sch else "")
            raise RequiredFieldMissing(
                f"a {status} appointment needs a start: TQ1-7 (or {others}) is empty", location="TQ1-7"
            )
        if not end:
            raise RequiredFieldMissing(
                f"a {status} appointment needs an end: {end_field} or a duration (TQ1-6, SCH-9) is empty",
                location=end_field,
            )
    elif not (start and end):
        start = end = None
    minutes = int(declared.total_seconds() // 60) if declared else None
    return Timing(start, end, minutes or None)
