"""FHIR date/dateTime/instant values as integer microsecond ranges.

A FHIR date value is implicitly a range at its precision
(https://hl7.org/fhir/R4/search.html#date): ``1985`` is all of 1985,
``1985-03-12`` the whole day.  Values without a time zone are read as UTC on
both the indexing and the query side, so they compare consistently.

The whole range FHIR allows is supported, up to ``9999-12-31T23:59:59.999999``
(a birth date or period end of ``9999-12-31`` is a common "open end"): the end
of a period is computed in integer microseconds, never as a ``datetime`` past
the year 9999.  Time-zone offsets must be the ones the FHIR ``dateTime`` regex
allows (https://hl7.org/fhir/R4/datatypes.html#dateTime: ``-14:00``..``+14:00``
with minutes below 60); anything else is an :class:`~common.InvalidInput` at the
element, not an overflow.
"""

from __future__ import annotations

import calendar
import re
import time
from datetime import UTC, datetime, timedelta, timezone

from common import InvalidInput

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = {"S": 1_000_000, "M": 60_000_000, "d": 86_400_000_000}
_DAY_US = _US["d"]
# https://hl7.org/fhir/R4/datatypes.html#dateTime: (Z|(+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))
_OFFSET = re.compile(r"^[+-](?:(?:0\d|1[0-3]):[0-5]\d|14:00)$")
_PATTERN = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?:\.(?P<f>\d{1,9}))?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def to_us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


def now_us() -> int:
    return time.time_ns() // 1000


def format_instant(value_us: int) -> str:
    """FHIR ``instant`` text for ``meta.lastUpdated`` (UTC, millisecond precision)."""
    moment = from_us(value_us)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def http_date(value_us: int) -> str:
    """RFC 7231 date for ``Last-Modified``."""
    return from_us(value_us).strftime("%a, %d %b %Y %H:%M:%S GMT")


def parse_fhir_instant_range(text: str, *, location: str | None = None) -> tuple[int, int]:
    """Return ``(low_us, high_us)`` inclusive bounds of the period a FHIR date value denotes."""
    match = _PATTERN.match(text.strip())
    if match is None:
        raise InvalidInput(f"'{text}' is not a valid FHIR date/dateTime", location=location)
    parts = match.groupdict()
    tz = UTC
    if parts["tz"] and parts["tz"] != "Z":
        if not _OFFSET.match(parts["tz"]):
            raise InvalidInput(f"'{text}' has a time-zone offset outside -14:00..+14:00", location=location)
        sign = 1 if parts["tz"][0] == "+" else -1
        hours, minutes = int(parts["tz"][1:3]), int(parts["tz"][4:6])
        tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        start = datetime(
            int(parts["y"]),
            int(parts["m"] or 1),
            int(parts["d"] or 1),
            int(parts["H"] or 0),
            int(parts["M"] or 0),
            int(parts["S"] or 0),
            int((parts["f"] or "0").ljust(6, "0")[:6]),
            tzinfo=tz,
        )
    except ValueError as exc:
        raise InvalidInput(f"'{text}' is not a valid date: {exc}", location=location) from exc
    if parts["f"] is not None:
        span = 1
    elif parts["S"] is not None:
        span = _US["S"]
    elif parts["M"] is not None:
        span = _US["M"]
    elif parts["d"] is not None:
        span = _DAY_US
    elif parts["m"] is not None:
        span = calendar.monthrange(start.year, start.month)[1] * _DAY_US
    else:
        span = (366 if calendar.isleap(start.year) else 365) * _DAY_US
    low = to_us(start)  # aware subtraction: no datetime past 9999 is ever built
    return low, low + span - 1
