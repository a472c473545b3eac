"""Clocks and the working-day calendar behind the request deadlines.

Why (Decree 356/2025/ND-CP Art. 5): a data-subject request must be
acknowledged within 2 *working days*; erasure is due within 20 days (30 when a
processor such as the CRM must act), extendable once by at most 20 days with
a reason; access and rectification within 10 days.  carebridge counts the
2-day acknowledgement in working days (Mon–Fri, minus the Vietnamese public
holidays of :mod:`consent.rights.holidays_vn`) and the longer periods in
calendar days, which is the stricter reading; every deadline ends at
23:59:59.999999 Vietnam time (UTC+7) of its last day.

The clock is injectable (:class:`ManualClock` in tests) so deadlines are
tested without waiting and without touching the system time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

from consent.rights.holidays_vn import VN_PUBLIC_HOLIDAYS
from fhir_store import now_us

VN_TZ = timezone(timedelta(hours=7), "ICT")
_DAY_US = 86_400_000_000


class Clock(Protocol):
    def now_us(self) -> int: ...


class SystemClock:
    def now_us(self) -> int:
        return now_us()


class ManualClock:
    """A clock the tests (and drills) set and advance explicitly."""

    def __init__(self, start: datetime) -> None:
        self._lock = threading.Lock()
        self._us = to_us(start)

    def now_us(self) -> int:
        with self._lock:
            return self._us

    def set(self, when: datetime) -> None:
        with self._lock:
            self._us = to_us(when)

    def advance(self, *, days: float = 0, hours: float = 0) -> None:
        with self._lock:
            self._us += int((days * 24 + hours) * 3600 * 1_000_000)


def to_us(when: datetime) -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=VN_TZ)
    return int(when.timestamp() * 1_000_000)


def from_us(value: int) -> datetime:
    return datetime.fromtimestamp(value / 1_000_000, tz=UTC)


def local_date(value_us: int) -> date:
    return from_us(value_us).astimezone(VN_TZ).date()


def end_of_day_us(day: date) -> int:
    """The last microsecond of ``day`` in Vietnam time."""
    start = datetime(day.year, day.month, day.day, tzinfo=VN_TZ)
    return to_us(start) + _DAY_US - 1


def iso(value_us: int | None) -> str | None:
    """An instant as ISO 8601 in Vietnam time (what people reading the request see)."""
    if value_us is None:
        return None
    return from_us(value_us).astimezone(VN_TZ).isoformat(timespec="seconds")


@dataclass(frozen=True)
class WorkingCalendar:
    holidays: frozenset[date]

    @classmethod
    def from_dates(cls, items: Iterable[str]) -> WorkingCalendar:
        return cls(frozenset(date.fromisoformat(d.strip()) for d in items if d.strip()))

    @classmethod
    def load(cls, path: str = "") -> WorkingCalendar:
        """Shipped Vietnamese holidays, or the file ``path`` (setting ``CAREBRIDGE_PRIVACY_HOLIDAYS_FILE``)."""
        if path:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
            return cls.from_dates(line.split("#", 1)[0] for line in lines)
        return cls.from_dates(VN_PUBLIC_HOLIDAYS)

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.holidays

    def add_working_days(self, start: date, days: int) -> date:
        """The ``days``-th working day after ``start`` (the filing day itself never counts)."""
        current = start
        remaining = days
        while remaining > 0:
            current += timedelta(days=1)
            if self.is_working_day(current):
                remaining -= 1
        return current

    def working_days_due(self, start_us: int, days: int) -> int:
        return end_of_day_us(self.add_working_days(local_date(start_us), days))

    @staticmethod
    def calendar_days_due(start_us: int, days: int) -> int:
        return end_of_day_us(local_date(start_us) + timedelta(days=days))

    def working_days_between(self, start_us: int, end_us: int) -> int:
        """Working days strictly after ``start`` up to and including ``end`` (negative if reversed)."""
        a, b = local_date(start_us), local_date(end_us)
        sign = 1
        if b < a:
            a, b, sign = b, a, -1
        count = 0
        current = a
        while current < b:
            current += timedelta(days=1)
            if self.is_working_day(current):
                count += 1
        return sign * count
