"""Blinded string and birth-date index: name, address and birth-date search without clear values at rest.

Why: ``search_string`` held names and addresses and ``search_date`` birth
dates in clear (issue #18 item 5); Law 91/2025/QH15 treats them as personal
data and ISO/IEC 27001:2022 A.8.11 asks for masking where the clear value is
not needed.  FHIR string search (https://hl7.org/fhir/R4/search.html#string)
is a case- and accent-insensitive *starts-with* match, ``:exact`` a
case-sensitive equality and ``:contains`` a substring match; birth-date search
compares ranges with the prefixes ``eq ne lt le gt ge``
(https://hl7.org/fhir/R4/search.html#prefix).  Each is answered from keyed
hashes (``StoreCipher.blind``, HMAC-SHA256 under the blind-index key):

* strings: one ``search_string`` row per prefix (1 .. :data:`PREFIX_MAX`
  normalised characters) and per distinct 2- and 3-gram of the normalised
  value; every row's ``exact`` column holds the keyed hash of the value as
  sent, which answers ``:exact`` and groups a value's grams.  A starts-with
  query up to :data:`PREFIX_MAX` characters and a ``:contains`` query of 2 or
  3 characters are exact; longer ones select candidates by hash (first
  :data:`PREFIX_MAX` characters; every 3-gram of the query in one value) and
  the store re-checks the decrypted candidates (:func:`needs_recheck`,
  :func:`matches_strings`), so answers stay exact.  A one-character
  ``:contains`` is refused (400): a 1-gram index would tell letter frequencies.
* birth dates: ``search_date`` keeps only the *year* span (clear: sorting by
  ``birthdate`` orders by year, then id); ``search_token`` rows under the same
  parameter hold the keyed hashes of the first and last day and month of the
  value's span.  Every prefix reduces to "first day <= D" or "last day >= D"
  (``eq`` to both, ``ne`` to neither), answered as "year before/after in
  clear, or one of the <= 11 month hashes, or one of the <= 31 day hashes of
  D's year": exact, without decrypting anything.

Measured in docs/benchmarks.md ("Blinded string and date index").
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, and_, exists, false, func, not_, or_, select

from common import InvalidInput
from fhir_store.blind_rows import (
    DATE_PREFIXES,
    DAY_US,
    GRAM,
    PREFIX,
    PREFIX_MAX,
    VALUE,
    Blind,
    bucket,
    day_of,
    keyed,
    year_span,
)
from fhir_store.instants import parse_fhir_instant_range
from fhir_store.schema import search_date, search_string, search_token
from fhir_store.search_params import SEARCH_SPECS, SearchParam, collect_values, normalize_text

if TYPE_CHECKING:
    from fhir_store.search import Filter, SearchQuery

# -- query side: strings ----------------------------------------------------------------------


def _contains_grams(norm: str) -> list[str]:
    return list(dict.fromkeys(norm[i : i + 3] for i in range(len(norm) - 2)))


def string_condition(
    resource_type: str, param: SearchParam, flt: Filter, blind: Blind
) -> ColumnElement[bool]:
    """Row condition on ``search_string`` for one filter (hash equality; a superset when rechecked)."""
    table = search_string
    alternatives: list[ColumnElement[bool]] = []
    tokens: list[str] = []
    exacts: list[str] = []
    long_grams: list[list[str]] = []
    for value in flt.values:
        if flt.modifier == "exact":
            exacts.append(keyed(blind, VALUE + value[:255]))
            continue
        norm = normalize_text(value)[:255]
        if not norm:
            alternatives.append(table.c.param == param.name)  # an empty value matches every value
        elif flt.modifier != "contains":
            tokens.append(keyed(blind, PREFIX + norm[:PREFIX_MAX]))
        elif len(norm) == 1:
            raise InvalidInput(
                f"'{param.name}' is encrypted at rest: ':contains' needs at least 2 characters",
                location=f"{param.name}:contains",
            )
        elif len(norm) <= 3:
            tokens.append(keyed(blind, GRAM + norm))
        else:
            long_grams.append([keyed(blind, GRAM + gram) for gram in _contains_grams(norm)])
    if long_grams:
        # Candidates (re-checked after decryption): one value of the resource holds at least as
        # many of the queries' 3-grams as the shortest query has; one subquery however many values.
        every = list(dict.fromkeys(g for grams in long_grams for g in grams))
        holders = (
            select(table.c.res_id)
            .where(table.c.res_type == resource_type, table.c.param == param.name, table.c.norm.in_(every))
            .group_by(table.c.res_id, table.c.exact)
            .having(func.count(table.c.norm.distinct()) >= min(len(set(g)) for g in long_grams))
        )
        alternatives.append(table.c.res_id.in_(holders))
    if tokens:  # one IN list: an ephemeral index on SQLite, a hashed lookup on PostgreSQL
        alternatives.append(table.c.norm.in_(list(dict.fromkeys(tokens))))
    if exacts:
        alternatives.append(table.c.exact.in_(list(dict.fromkeys(exacts))))
    return and_(table.c.param == param.name, or_(*alternatives))


def needs_recheck(query: SearchQuery) -> bool:
    """Whether hash matches are only candidates: a long starts-with or ``:contains`` string value."""
    spec = SEARCH_SPECS[query.resource_type]
    for flt in query.filters:
        param = spec.params.get(flt.param)
        if param is None or param.kind != "string" or flt.modifier in ("exact", "missing"):
            continue
        limit = 3 if flt.modifier == "contains" else PREFIX_MAX
        if any(len(normalize_text(value)[:255]) > limit for value in flt.values):
            return True
    return False


def _clear_strings(resource: dict[str, Any], param: SearchParam) -> Iterator[str]:
    for parts in param.split_paths:
        for value in collect_values(resource, parts):
            if isinstance(value, str) and value.strip():
                yield normalize_text(value)[:255]


def matches_strings(resource: dict[str, Any], query: SearchQuery) -> bool:
    """The string filters of ``query`` evaluated on a decrypted resource (AND of filters, OR of values)."""
    spec = SEARCH_SPECS[query.resource_type]
    for flt in query.filters:
        param = spec.params.get(flt.param)
        if param is None or param.kind != "string" or flt.modifier in ("exact", "missing"):
            continue
        held = list(_clear_strings(resource, param))
        wanted = [normalize_text(value)[:255] for value in flt.values]
        if flt.modifier == "contains":
            found = any(w in h for w in wanted for h in held)
        else:
            found = any(h.startswith(w) for w in wanted for h in held)
        if not found:
            return False
    return True


# -- query side: birth dates ------------------------------------------------------------------


def _days(year: int, month: int, first: int, last: int) -> Iterable[str]:
    return (f"{year:04d}-{month:02d}-{d:02d}" for d in range(first, last + 1))


def _first_at_most(param: str, day: date, blind: Blind, res: Any) -> ColumnElement[bool]:
    """The value's first day is on or before ``day``."""
    hashes = [bucket(param, "lo", "m", f"{day.year:04d}-{m:02d}", blind) for m in range(1, day.month)]
    hashes += [bucket(param, "lo", "d", d, blind) for d in _days(day.year, day.month, 1, day.day)]
    return _either(param, search_date.c.low_us < year_span(day.year)[0], hashes, res)


def _last_at_least(param: str, day: date, blind: Blind, res: Any) -> ColumnElement[bool]:
    """The value's last day is on or after ``day``."""
    month_end = calendar.monthrange(day.year, day.month)[1]
    hashes = [bucket(param, "hi", "m", f"{day.year:04d}-{m:02d}", blind) for m in range(day.month + 1, 13)]
    hashes += [bucket(param, "hi", "d", d, blind) for d in _days(day.year, day.month, day.day, month_end)]
    return _either(param, search_date.c.high_us > year_span(day.year)[1], hashes, res)


def _either(param: str, year_clause: ColumnElement[bool], hashes: list[str], res: Any) -> ColumnElement[bool]:
    res_type, res_id = res
    sd, st = search_date, search_token
    in_year = exists().where(
        sd.c.res_type == res_type, sd.c.res_id == res_id, sd.c.param == param, year_clause
    )
    in_buckets = exists().where(
        st.c.res_type == res_type, st.c.res_id == res_id, st.c.param == param, st.c.code.in_(hashes)
    )
    return or_(in_year, in_buckets)


def _safeday_of(value_us: int) -> date | None:
    try:
        return day_of(value_us)
    except OverflowError:  # before 0001-01-01 or after 9999-12-31 (a time-zone offset can reach there)
        return None


def date_condition(param: str, value: str, blind: Blind, res: Any) -> ColumnElement[bool]:
    """One birth-date value with its prefix, over a value stored as a span of whole UTC days."""
    prefix = value[:2] if value[:2] in DATE_PREFIXES else "eq"
    low, high = parse_fhir_instant_range(value[2:] if value[:2] in DATE_PREFIXES else value, location=param)
    present = _has_value(param, res)
    if prefix == "lt":  # the first day starts before ``low``: it is on or before the day of low - 1 µs
        bound = _safeday_of(low - 1)
        return false() if bound is None else _first_at_most(param, bound, blind, res)
    if prefix == "le":
        bound = _safeday_of(high)
        return false() if bound is None else _first_at_most(param, bound, blind, res)
    if prefix == "gt":  # the last day ends after ``high``: it is on or after the day of high + 1 µs
        bound = _safeday_of(high + 1)
        return false() if bound is None else _last_at_least(param, bound, blind, res)
    if prefix == "ge":
        bound = _safeday_of(low)
        return present if bound is None else _last_at_least(param, bound, blind, res)
    clauses = [present]
    first = _safeday_of(low + DAY_US - 1)  # the first whole day starting at or after ``low``
    last = _safeday_of(high - DAY_US + 1)  # the last whole day ending at or before ``high``
    if (first is None and low > 0) or (last is None and high < 0) or (first and last and first > last):
        return false() if prefix == "eq" else present  # no whole day of 0001..9999 lies within
    if first is not None and first > date.min:
        clauses.append(not_(_first_at_most(param, first - timedelta(days=1), blind, res)))
    if last is not None and last < date.max:
        clauses.append(not_(_last_at_least(param, last + timedelta(days=1), blind, res)))
    within = and_(*clauses)
    return within if prefix == "eq" else and_(present, not_(within))


def _has_value(param: str, res: Any) -> ColumnElement[bool]:
    res_type, res_id = res
    sd = search_date
    return exists().where(sd.c.res_type == res_type, sd.c.res_id == res_id, sd.c.param == param)
