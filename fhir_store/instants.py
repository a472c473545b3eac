"""FHIR date/dateTime/instant values as integer microsecond ranges.

A FHIR date value is implicitly a range at its precision
(https://hl7.org/fhir/R4/search.html#date): ``1985`` is all of 1985,
``1985-03-12`` the whole day.  Values without a time zone are read as UTC on
both the indexing and the query side, so they compare consistently.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone

from common import InvalidInput

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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


def _add_months(moment: datetime, months: int) -> datetime:
    total = moment.month - 1 + months
    return moment.replace(year=moment.year + total // 12, month=total % 12 + 1)


def parse_fhir_instant_range(text: str, *, location: str | None = None) -> tuple[int, int]:
    """Return ``(low_us, high_us)`` inclusive bounds of the period a FHIR date value denotes."""
    match = _PATTERN.match(text.strip())
    if match is None:
        raise InvalidInput(f"'{text}' is not a valid FHIR date/dateTime", location=location)
    parts = match.groupdict()
    tz = UTC
    if parts["tz"] and parts["tz"] != "Z":
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
        end = start + timedelta(microseconds=1)
    elif parts["S"] is not None:
        end = start + timedelta(seconds=1)
    elif parts["M"] is not None:
        end = start + timedelta(minutes=1)
    elif parts["d"] is not None:
        end = start + timedelta(days=1)
    elif parts["m"] is not None:
        end = _add_months(start, 1)
    else:
        end = start.replace(year=start.year + 1)
    return to_us(start), to_us(end) - 1
