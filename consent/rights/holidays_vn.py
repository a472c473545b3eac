"""Vietnamese public holidays (non-working days) 2025–2027, as data.

Why (Decree 356/2025/ND-CP Art. 5): the acknowledgement deadline of a
data-subject request counts *working days*.  Working days are Monday–Friday
except the public holidays of the Labour Code 2019 Art. 112 (New Year, Tết
Nguyên Đán, Hùng Kings' Commemoration 10/3 lunar, 30/4, 1/5, National Day 2/9
plus one adjacent day) as fixed each year by the Prime Minister's / MOLISA's
announcement, including the weekday days off that replace holidays falling
on a weekend.

Only weekdays matter here (weekends are never working days).  The 2025 list
follows the published schedule; 2026 and 2027 are computed from the lunar
calendar and the usual rules and must be checked against each year's official
announcement.  Operators override or extend the list with a file named by
``CAREBRIDGE_PRIVACY_HOLIDAYS_FILE`` (one ISO date per line, ``#`` comments),
which replaces this table entirely (see docs/patient-rights.md).
"""

from __future__ import annotations

VN_PUBLIC_HOLIDAYS: tuple[str, ...] = (
    # 2025
    "2025-01-01",  # New Year
    "2025-01-27",  # Tết Ất Tỵ (27/1 – 31/1 on weekdays)
    "2025-01-28",
    "2025-01-29",
    "2025-01-30",
    "2025-01-31",
    "2025-04-07",  # Hùng Kings (10/3 lunar)
    "2025-04-30",  # Reunification Day
    "2025-05-01",  # Labour Day
    "2025-05-02",  # swapped day off (worked on Saturday 26/4)
    "2025-09-01",  # National Day (adjacent day)
    "2025-09-02",  # National Day
    # 2026
    "2026-01-01",  # New Year
    "2026-01-02",  # swapped day off
    "2026-02-16",  # Tết Bính Ngọ (16/2 – 20/2 on weekdays)
    "2026-02-17",
    "2026-02-18",
    "2026-02-19",
    "2026-02-20",
    "2026-04-27",  # Hùng Kings (Sunday 26/4) -> Monday off
    "2026-04-30",  # Reunification Day
    "2026-05-01",  # Labour Day
    "2026-09-01",  # National Day (adjacent day)
    "2026-09-02",  # National Day
    # 2027 (provisional: check the official announcement)
    "2027-01-01",  # New Year
    "2027-02-04",  # Tết Đinh Mùi (Tết day 1 is Saturday 6/2)
    "2027-02-05",
    "2027-02-08",
    "2027-02-09",
    "2027-02-10",
    "2027-04-16",  # Hùng Kings (10/3 lunar)
    "2027-04-30",  # Reunification Day
    "2027-05-03",  # Labour Day (Saturday 1/5) -> Monday off
    "2027-09-02",  # National Day
    "2027-09-03",  # National Day (adjacent day)
)
