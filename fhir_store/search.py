"""FHIR search: parse query parameters and compile them to SQL over the index tables.

Supported (https://hl7.org/fhir/R4/search.html): token ``[system]|[code]``,
string (default starts-with, ``:exact``, ``:contains``; case/accent-insensitive),
date prefixes ``eq ne lt gt le ge``, reference ``[Type/]id``, ``:missing`` on
every parameter, ``_id``, ``_lastUpdated``, comma = OR, repeated parameter =
AND.  Unknown parameters are refused with 400 (strict handling) rather than
silently ignored, so a typo never returns the whole table.

Identifier, phone, e-mail and telecom values are indexed as keyed hashes
(``fhir_store.content_cipher``): the store blinds a parsed query
(``fhir_store.blind_index.blind_query``) before it is compiled here, and
modifiers other than ``:missing`` on those parameters are refused with 400
(a hash cannot be searched by substring, and a silent exact match would be wrong).
Names, addresses and birth dates are keyed hashes too; their conditions are
compiled by ``fhir_store.blind_text`` with the query's ``blind``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from sqlalchemy import ColumnElement, Connection, and_, case, exists, func, not_, or_, select
from sqlalchemy.sql import Select

from common import InvalidInput, SearchSettings
from fhir_store.blind_text import date_condition, string_condition
from fhir_store.instants import parse_fhir_instant_range
from fhir_store.schema import resource_current, search_date, search_reference, search_string, search_token
from fhir_store.search_limits import check_search_limits
from fhir_store.search_params import INCLUDES, SEARCH_SPECS, SearchParam

MAX_COUNT = 1000
DEFAULT_COUNT = 20
_PREFIXES = ("eq", "ne", "lt", "gt", "le", "ge")
_RESULT_PARAMS = {
    "_count",
    "_sort",
    "_include",
    "_revinclude",
    "_summary",
    "_total",
    "_elements",
    "_format",
    "_pretty",
    "_page",
    "_offset",
    "_page_token",
}


@dataclass(frozen=True)
class Filter:
    param: str
    modifier: str | None
    values: tuple[str, ...]


@dataclass
class SearchQuery:
    resource_type: str
    filters: list[Filter] = field(default_factory=list)
    sort: list[tuple[str, bool]] = field(default_factory=list)  # (name, descending)
    count: int = DEFAULT_COUNT
    offset: int = 0
    page_token: str | None = None
    includes: list[tuple[str, str, str]] = field(default_factory=list)  # (source type, param, target type)
    revincludes: list[tuple[str, str, str]] = field(default_factory=list)
    summary: str | None = None
    total: str | None = None
    elements: list[str] | None = None
    # True once the values of blinded parameters were replaced by their keyed hashes
    blinded: bool = False
    # The blind-index HMAC: strings and birth dates are compiled to keyed hashes with it
    blind: Callable[[str], str] | None = field(default=None, repr=False, compare=False)


DEFAULT_LIMITS = SearchSettings()


def parse_criteria(resource_type: str, criteria: str, limits: SearchSettings = DEFAULT_LIMITS) -> SearchQuery:
    """Parse the query part of a conditional URL (``identifier=sys|val``)."""
    return parse_query(resource_type, parse_qsl(criteria.lstrip("?"), keep_blank_values=True), limits)


def _int_param(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError as exc:
        raise InvalidInput(f"{name} must be an integer", location=name) from exc
    return max(low, min(high, number))


def _parse_include(value: str, name: str) -> tuple[str, str, str]:
    parts = value.split(":")
    if len(parts) < 2 or (parts[0], parts[1]) not in INCLUDES:
        supported = ", ".join(f"{a}:{b}" for a, b in INCLUDES)
        raise InvalidInput(f"unsupported {name} '{value}' (supported: {supported})", location=name)
    return parts[0], parts[1], INCLUDES[(parts[0], parts[1])]


def parse_query(
    resource_type: str, params: Sequence[tuple[str, str]], limits: SearchSettings = DEFAULT_LIMITS
) -> SearchQuery:
    check_search_limits(params, limits)
    spec = SEARCH_SPECS.get(resource_type)
    if spec is None:
        raise InvalidInput(f"search is not supported for {resource_type}", location=resource_type)
    query = SearchQuery(resource_type)
    for raw_name, value in params:
        name, _, modifier = raw_name.partition(":")
        if name == "_count":
            query.count = _int_param(name, value, 0, MAX_COUNT)
        elif name in ("_offset", "_page"):
            query.offset = _int_param(name, value, 0, 10**9)
        elif name == "_page_token":
            # Paging links: ``_page_token`` names the frozen result snapshot, ``_offset`` the position.
            query.page_token = value or None
        elif name == "_sort":
            for item in filter(None, value.split(",")):
                key = item.lstrip("-")
                if key not in ("_id", "_lastUpdated") and key not in spec.sortable:
                    raise InvalidInput(f"cannot sort {resource_type} by '{key}'", location="_sort")
                query.sort.append((key, item.startswith("-")))
        elif name == "_include":
            query.includes.append(_parse_include(value, name))
        elif name == "_revinclude":
            source, param, target = _parse_include(value, name)
            if target != resource_type:
                raise InvalidInput(f"_revinclude {value} does not point at {resource_type}", location=name)
            query.revincludes.append((source, param, target))
        elif name == "_summary":
            if value not in ("count", "true", "false"):
                raise InvalidInput("_summary supports count, true, false", location="_summary")
            query.summary = value
        elif name == "_total":
            query.total = value
        elif name == "_elements":
            query.elements = [e.strip() for e in value.split(",") if e.strip()]
        elif name in _RESULT_PARAMS:
            continue
        elif name in ("_id", "_lastUpdated") or name in spec.params:
            if modifier and modifier not in ("missing", "exact", "contains", "Patient"):
                raise InvalidInput(f"unsupported modifier ':{modifier}'", location=raw_name)
            if modifier and modifier != "missing" and name in spec.params and spec.params[name].blinded:
                raise InvalidInput(
                    f"'{name}' values are encrypted at rest and searchable by exact value only: "
                    f"modifier ':{modifier}' is not supported",
                    location=raw_name,
                )
            query.filters.append(Filter(name, modifier or None, tuple(value.split(","))))
        else:
            raise InvalidInput(f"unknown search parameter '{name}' for {resource_type}", location=name)
    return query


def _date_condition(
    low: ColumnElement[int], high: ColumnElement[int], value: str, location: str
) -> ColumnElement[bool]:
    prefix = value[:2] if value[:2] in _PREFIXES else "eq"
    text = value[2:] if value[:2] in _PREFIXES else value
    q_low, q_high = parse_fhir_instant_range(text, location=location)
    if prefix == "eq":
        return and_(low >= q_low, high <= q_high)
    if prefix == "ne":
        return or_(low < q_low, high > q_high)
    if prefix == "lt":
        return low < q_low
    if prefix == "gt":
        return high > q_high
    if prefix == "le":
        return low <= q_high
    return high >= q_low  # ge


def _token_condition(value: str, param: SearchParam) -> ColumnElement[bool]:
    """Contact points arrive here as bare blinded codes (``blind_query`` dropped ``system|``)."""
    if "|" in value and not param.contact_point:
        system, _, code = value.partition("|")
        if not code:
            return search_token.c.system == system
        return and_(search_token.c.system == system, search_token.c.code == code)
    return search_token.c.code == value


_TABLES = {"token": search_token, "string": search_string, "date": search_date, "reference": search_reference}


def _value_condition(query: SearchQuery, param: SearchParam, flt: Filter) -> ColumnElement[bool]:
    """The index-row condition of one filter: ``param`` matches any of its values (OR)."""
    if param.kind == "string":
        assert query.blind is not None  # checked by _conditions
        return string_condition(query.resource_type, param, flt, query.blind)
    alternatives: list[ColumnElement[bool]] = []
    for value in flt.values:
        if param.kind == "token":
            alternatives.append(_token_condition(value, param))
        elif param.kind == "date":
            alternatives.append(
                _date_condition(search_date.c.low_us, search_date.c.high_us, value, flt.param)
            )
        else:
            target_type, _, target_id = value.rpartition("/")
            cond = search_reference.c.target_id == target_id
            if target_type or flt.modifier == "Patient":
                cond = and_(cond, search_reference.c.target_type == (target_type or "Patient"))
            alternatives.append(cond)
    table = _TABLES[param.kind]
    return and_(table.c.param == param.name, or_(*alternatives))


def _conditions(query: SearchQuery) -> list[ColumnElement[bool]]:
    """WHERE conditions of ``query`` on ``resource_current``, one join per index table at most.

    Why: each filter as its own correlated EXISTS is a semi-join for PostgreSQL's planner,
    whose join search grows faster than linearly (a parameter repeated 100 times took
    0.9 s to plan, 300 times several minutes: docs/benchmarks.md).  Repeated filters
    (AND) on one index table become a single ``res_id IN (SELECT ... GROUP BY res_id
    HAVING ...)``: the rows matching any filter are read once and each filter is one
    HAVING term, so the cost grows linearly with the number of filters and values.
    """
    resource_type = query.resource_type
    res_id = resource_current.c.res_id
    conditions: list[ColumnElement[bool]] = []
    per_table: dict[str, list[tuple[SearchParam, Filter]]] = {}
    for flt in dict.fromkeys(query.filters):  # identical filters (AND) are one filter
        if flt.param == "_id":
            conditions.append(res_id.in_(flt.values))
            continue
        if flt.param == "_lastUpdated":
            col = resource_current.c.last_updated_us
            conditions.append(or_(*(_date_condition(col, col, v, "_lastUpdated") for v in flt.values)))
            continue
        param = SEARCH_SPECS[resource_type].params[flt.param]
        keyed = param.blinded or param.kind == "string" or param.personal_date
        if keyed and flt.modifier != "missing" and (not query.blinded or query.blind is None):
            # A clear value can never match a blinded index row: failing loudly beats "no results".
            raise RuntimeError(f"search on {flt.param} without blind_query (a store bug)")
        table = _TABLES[param.kind]
        if flt.modifier == "missing":
            present = exists().where(
                table.c.res_type == resource_type, table.c.res_id == res_id, table.c.param == param.name
            )
            conditions.append(not_(present) if flt.values[0] == "true" else present)
            continue
        if param.personal_date:
            assert query.blind is not None
            res = (resource_type, res_id)
            conditions.append(or_(*(date_condition(param.name, v, query.blind, res) for v in flt.values)))
            continue
        per_table.setdefault(param.kind, []).append((param, flt))
    for kind, filters in per_table.items():
        table = _TABLES[kind]
        matches = [_value_condition(query, param, flt) for param, flt in filters]
        if len(matches) == 1:
            conditions.append(
                exists().where(table.c.res_type == resource_type, table.c.res_id == res_id, matches[0])
            )
            continue
        every = (
            select(table.c.res_id)
            .where(table.c.res_type == resource_type, or_(*matches))
            .group_by(table.c.res_id)
            .having(and_(*(func.max(case((match, 1), else_=0)) == 1 for match in matches)))
        )
        conditions.append(res_id.in_(every))
    return conditions


def _base_select(query: SearchQuery) -> Select[tuple[str]]:
    conditions = [resource_current.c.res_type == query.resource_type, resource_current.c.deleted.is_(False)]
    return select(resource_current.c.res_id).where(*conditions, *_conditions(query))


def find_ids(conn: Connection, query: SearchQuery, limit: int, offset: int = 0) -> list[str]:
    stmt = _base_select(query)
    order = []
    column: ColumnElement[Any]
    for key, descending in query.sort:
        if key == "_id":
            column = resource_current.c.res_id
        elif key == "_lastUpdated":
            column = resource_current.c.last_updated_us
        else:
            param = SEARCH_SPECS[query.resource_type].sortable[key]
            column = (
                select(func.min(search_date.c.low_us))
                .where(
                    search_date.c.res_type == query.resource_type,
                    search_date.c.res_id == resource_current.c.res_id,
                    search_date.c.param == param,
                )
                .scalar_subquery()
            )
        order.append(column.desc() if descending else column.asc())
    order.append(resource_current.c.res_id.asc())
    stmt = stmt.order_by(*order).limit(limit).offset(offset)
    return [str(row[0]) for row in conn.execute(stmt)]


def count_matches(conn: Connection, query: SearchQuery) -> int:
    stmt = select(func.count()).select_from(_base_select(query).subquery())
    return int(conn.execute(stmt).scalar_one())


def referenced_ids(
    conn: Connection, source_type: str, source_ids: Sequence[str], param: str
) -> list[tuple[str, str]]:
    """(type, id) targets of ``param`` references held by the given resources (for _include)."""
    if not source_ids:
        return []
    rows = conn.execute(
        select(search_reference.c.target_type, search_reference.c.target_id)
        .where(
            search_reference.c.res_type == source_type,
            search_reference.c.res_id.in_(source_ids),
            search_reference.c.param == param,
        )
        .distinct()
    )
    return [(str(r[0]), str(r[1])) for r in rows]


def referencing_ids(
    conn: Connection, source_type: str, param: str, target_type: str, target_ids: Sequence[str]
) -> list[str]:
    """Ids of ``source_type`` resources whose ``param`` points at the targets (for _revinclude)."""
    if not target_ids:
        return []
    rows = conn.execute(
        select(search_reference.c.res_id)
        .where(
            search_reference.c.res_type == source_type,
            search_reference.c.param == param,
            search_reference.c.target_type == target_type,
            search_reference.c.target_id.in_(target_ids),
        )
        .distinct()
        .order_by(search_reference.c.res_id)
    )
    return [str(r[0]) for r in rows]
