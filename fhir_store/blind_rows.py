"""Index rows of names, addresses and birth dates as keyed hashes (the write side of ``blind_text``).

Why a module of its own: ``search_params.extract_index_rows`` builds these on
every write and ``blind_text`` (the query side) compiles lookups of the same
hashes; both import this, so the two can never disagree on a hash's input.
The scheme and its reasons are in ``fhir_store/blind_text.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

from fhir_store.instants import to_us

Blind = Callable[[str], str]
#: Starts-with queries up to this many normalised characters are answered by one hash lookup.
PREFIX_MAX = 16
_GRAMS = (2, 3)
#: Element names of dates that are personal data (indexed blinded, year in clear).
PERSONAL_DATES = frozenset({"birthDate"})
PREFIX, GRAM, VALUE = "str-prefix\x00", "str-gram\x00", "str-exact\x00"
DATE_PREFIXES = ("eq", "ne", "lt", "gt", "le", "ge")
DAY_US = 86_400_000_000


# -- write side -------------------------------------------------------------------------------


def keyed(blind: Blind, text: str) -> str:
    """``blind(text)`` with the HMAC cut to 128 bits (22 base64url characters), key id kept.

    Why: a name or address is indexed as ~170 rows of two hashes each
    (docs/benchmarks.md); equality lookups need no more than 128 bits (a
    collision is a 2^-64 birthday event per pair of distinct inputs at worst).
    """
    kid, _, mac = blind(text).partition(".")
    return f"{kid}.{mac[:22]}"


def string_rows(value: str, norm: str, blind: Blind) -> list[tuple[str, str]]:
    """``(keyed prefix or gram, keyed exact value)`` rows of one string element."""
    exact = keyed(blind, VALUE + value[:255])
    tokens = [PREFIX + norm[:n] for n in range(1, min(len(norm), PREFIX_MAX) + 1)]
    tokens += dict.fromkeys(GRAM + norm[i : i + n] for n in _GRAMS for i in range(len(norm) - n + 1))
    return [(keyed(blind, token), exact) for token in tokens]


def day_of(value_us: int) -> date:
    return (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value_us)).date()


def year_span(year: int) -> tuple[int, int]:
    low = to_us(datetime(year, 1, 1, tzinfo=UTC))
    high = to_us(datetime(year + 1, 1, 1, tzinfo=UTC)) - 1 if year < 9999 else 2**62
    return low, high


def bucket(param: str, end: str, unit: str, text: str, blind: Blind) -> str:
    return keyed(blind, f"date\x00{param}\x00{end}\x00{unit}\x00{text}")


def date_rows(
    param: str, low_us: int, high_us: int, blind: Blind
) -> tuple[list[tuple[str, int, int]], list[tuple[str, str, str]]]:
    """Year-span ``search_date`` rows and keyed first/last day and month ``search_token`` rows."""
    first, last = day_of(low_us), day_of(high_us)
    dates = [(param, year_span(first.year)[0], year_span(last.year)[1])]
    tokens = [
        (param, "", bucket(param, "lo", "m", f"{first.year:04d}-{first.month:02d}", blind)),
        (param, "", bucket(param, "lo", "d", first.isoformat(), blind)),
        (param, "", bucket(param, "hi", "m", f"{last.year:04d}-{last.month:02d}", blind)),
        (param, "", bucket(param, "hi", "d", last.isoformat(), blind)),
    ]
    return dates, tokens
