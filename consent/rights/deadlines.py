"""Every data-subject-request clock in one table, each with the text it comes from.

Why one table (issue #18 item 9): the periods of Decree 356/2025/ND-CP differ
by request type, by whether a processor or third party must act, and in the
unit (working days for the acknowledgement, days otherwise).  Keeping them
side by side with their citation makes each figure checkable against the
decree and keeps the filing, extension and documentation code from carrying
numbers of its own.  Which reading was taken where the sources differ, and
why, is in docs/patient-rights.md ("Deadlines: the reading taken").

Units: the decree says "ngày làm việc" (working days) for the acknowledgement
and "ngày" (days) for the periods; a period in days counts calendar days from
the day after receipt (Civil Code 2015 Art. 147).  carebridge does not move a
deadline that falls on a weekend or holiday to the next working day (Civil
Code Art. 148(5) would allow it): the earlier date is the stricter reading.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

ERASURE: Final = "erasure"
ACCESS: Final = "access"
RECTIFICATION: Final = "rectification"
RESTRICTION: Final = "restriction"
OBJECTION: Final = "objection"
WITHDRAWAL: Final = "withdrawal"

DECREE: Final = "Decree 356/2025/ND-CP"


@dataclass(frozen=True)
class Clock:
    """One deadline: ``days`` in ``unit``, ``with_processor`` when a processor/third party must act."""

    days: int
    unit: Literal["working", "calendar"]
    with_processor: int | None
    max_extension: int | None
    basis: str
    #: "decree" when the figure is the decree's as read in its text or the secondary sources that
    #: quote it; "coded" when no source reached states it and carebridge keeps its earlier figure.
    source: Literal["decree", "coded"]


_STOP = "15 days, 20 when a processor or third party must stop, one extension of at most 15 days"

#: The clocks.  ``acknowledge`` applies to every request type; the others are per type.
CLOCKS: Final[dict[str, Clock]] = {
    "acknowledge": Clock(
        2, "working", None, None, f"{DECREE} Art. 5: reply within 02 working days", "decree"
    ),
    WITHDRAWAL: Clock(
        15, "calendar", 20, 15, f"{DECREE} Art. 5(2), Art. 10: withdrawal of consent {_STOP}", "decree"
    ),
    RESTRICTION: Clock(15, "calendar", 20, 15, f"{DECREE} Art. 5(2), Art. 10: restriction {_STOP}", "decree"),
    OBJECTION: Clock(15, "calendar", 20, 15, f"{DECREE} Art. 5: objection {_STOP}", "decree"),
    ACCESS: Clock(10, "calendar", None, 20, f"{DECREE} Art. 5: access/provision, 10 days", "coded"),
    RECTIFICATION: Clock(10, "calendar", None, 20, f"{DECREE} Art. 5: rectification, 10 days", "coded"),
    ERASURE: Clock(20, "calendar", 30, 20, f"{DECREE} Art. 5: erasure, 20 days, 30 via a processor", "coded"),
}

REQUEST_TYPES: Final[tuple[str, ...]] = (ERASURE, ACCESS, RECTIFICATION, RESTRICTION, OBJECTION, WITHDRAWAL)


def ack_working_days() -> int:
    return CLOCKS["acknowledge"].days


def completion_days(request_type: str, processor: bool) -> int:
    """Days to complete a request of ``request_type`` (the processor figure when one must act)."""
    clock = CLOCKS[request_type]
    return clock.with_processor if processor and clock.with_processor is not None else clock.days


def counts_processor(request_type: str) -> bool:
    """Whether a processor holding the patient lengthens this type's period."""
    return CLOCKS[request_type].with_processor is not None


def max_extension(request_type: str) -> int:
    """The one extension's longest length in days (0: the type cannot be extended)."""
    return CLOCKS[request_type].max_extension or 0


def table() -> list[dict[str, object]]:
    """The table as rows (for documents and the deadline test)."""
    return [
        {
            "clock": name,
            "days": c.days,
            "unit": c.unit,
            "with_processor": c.with_processor,
            "max_extension": c.max_extension,
            "basis": c.basis,
            "source": c.source,
        }
        for name, c in CLOCKS.items()
    ]
