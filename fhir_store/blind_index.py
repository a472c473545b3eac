"""Blind indexes: searching and claiming identifiers that are stored only as keyed hashes.

Why: the search index (``search_token``) and the uniqueness table
(``identifier_claim``) need equality on identifier and contact values, but
must not hold CCCD, BHYT, phone numbers or e-mail addresses in clear (issue
#5).  A keyed HMAC (``StoreCipher.blind``) keeps equality and nothing else:

* every write stores ``blind(value)`` (``search_params.extract_index_rows``,
  ``writer``'s claims);
* every lookup blinds what it looks for the same way (:func:`blind_query`
  for searches and conditional URLs, ``blind`` for ``Patient/$merge``), with
  the ``system`` kept in clear so ``identifier=system|value``,
  ``identifier=value`` and ``identifier=system|`` all keep working;
* phone searches accept any spelling of a number (``0912...``, ``84912...``,
  ``0084912...``, ``+84 912...``): the text as sent and its E.164 form
  (:func:`common.phones.phone_variants`, the rule phones are stored by) are
  both blinded;
* what equality cannot answer (``:contains``, ``:exact``) is refused by
  ``search.parse_query`` with a 400.

:func:`reindex` rebuilds the blinded rows from the (decrypted) current
content: once for a database written before blinding existed (run by
``key_registry.open_cipher`` on first start), and to move the index to a new
blind key (``carebridge store reindex --rotate-blind-key``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from sqlalchemy import Connection, delete, insert, select, tuple_

from common import PHONE_SYSTEMS, is_secondary_identifier, phone_variants
from fhir_store.schema import INDEX_TABLES, identifier_claim, resource_current, search_string, search_token
from fhir_store.search import Filter, SearchQuery
from fhir_store.search_params import SEARCH_SPECS, SearchParam, extract_index_rows

Blind = Callable[[str], str]
BATCH = 500
#: Domain separation: a blinded page token can never equal the blind index of a stored value.
PAGE_TOKEN_DOMAIN = "carebridge page token\x00"
#: Domain of a blinded name, address or date value in a search's audited query text.
QUERY_VALUE_DOMAIN = "carebridge query value\x00"
_CLEAR_CONTROLS = frozenset(
    {"_id", "_count", "_sort", "_include", "_revinclude", "_summary", "_total", "_elements", "_format"}
    | {"_pretty", "_page", "_offset", "_lastUpdated"}
)


def _holds_phones(param: SearchParam) -> bool:
    """``phone`` and ``telecom`` (any system) may be searched by phone number; ``email`` not."""
    return not param.telecom_systems or not PHONE_SYSTEMS.isdisjoint(param.telecom_systems)


def _blind_values(param: SearchParam, value: str, blind: Blind) -> Iterator[str]:
    if param.contact_point:
        if "|" in value:  # ContactPoint tokens match on the value only (system|value → value)
            value = value.partition("|")[2]
        if _holds_phones(param):
            for variant in phone_variants(value):
                yield blind(variant)
        else:
            yield blind(value)
        return
    if "|" in value:
        system, _, code = value.partition("|")
        yield f"{system}|{blind(code)}" if code else value
        return
    yield blind(value)


def blind_query(query: SearchQuery, blind: Blind) -> SearchQuery:
    """``query`` with the values of blinded parameters replaced by their keyed hashes."""
    if query.blinded and query.blind is not None:
        return query
    spec = SEARCH_SPECS.get(query.resource_type)
    filters: list[Filter] = []
    for flt in query.filters:
        param = spec.params.get(flt.param) if spec is not None else None
        if param is None or not param.blinded or flt.modifier == "missing":
            filters.append(flt)
            continue
        values = tuple(dict.fromkeys(v for value in flt.values for v in _blind_values(param, value, blind)))
        filters.append(Filter(flt.param, flt.modifier, values))
    return replace(query, filters=filters, blinded=True, blind=blind)


def blind_query_text(resource_type: str, query_text: str, blind: Blind) -> str:
    """A search's query string with the values of blinded parameters replaced by their keyed hashes.

    Why: the query string is recorded in the search's AuditEvent (IHE BALP query
    entity); a search by CCCD or phone must not put the number into the audit
    trail in clear (ISO/IEC 27001 A.8.11).  With the store key, a compliance
    officer can still tell whether a given number was searched, by blinding it.
    A ``_page_token`` is blinded too: in clear it would let a reader of the trail
    replay a live paging link (the snapshot itself is bound to its caller,
    ``fhir_store.search_snapshots``, so this is defence in depth).  Names,
    addresses, dates and any parameter not known to be harmless are blinded as
    ``blind("carebridge query value\\0" + value)`` (issue #18 item 5): the trail
    keeps every parameter name, and codes, references, ids and paging controls
    stay readable.
    """
    spec = SEARCH_SPECS.get(resource_type)
    if spec is None or not query_text:
        return query_text
    prefix, mark, text = query_text.rpartition("?")  # "Patient?identifier=..." or a bare query string
    pairs, changed = [], False
    for key, value in parse_qsl(text, keep_blank_values=True):
        name = key.partition(":")[0]
        param = spec.params.get(name)
        if param is not None and param.blinded and value:
            value = ",".join(next(_blind_values(param, v, blind), "") for v in value.split(","))
            changed = True
        elif key == "_page_token" and value:
            value, changed = blind(PAGE_TOKEN_DOMAIN + value), True
        elif value and not _clear_in_audit(name, param):
            value, changed = ",".join(blind(QUERY_VALUE_DOMAIN + v) for v in value.split(",")), True
        pairs.append((key, value))
    if not changed:
        return query_text  # recorded exactly as received
    return prefix + mark + urlencode(pairs, safe="|:,/")


def _clear_in_audit(name: str, param: SearchParam | None) -> bool:
    """Values the audit trail keeps as sent: paging/result controls, ids, codes and references."""
    if param is None:
        return name in _CLEAR_CONTROLS
    return param.kind == "reference" or (param.kind == "token" and not param.blinded)


def claimed_identifiers(resource: dict[str, Any], blind: Blind) -> dict[tuple[str, str], str]:
    """``{(system, blind(value)): value}`` of a resource's business identifiers (the claim rows).

    The clear value is kept beside for the caller's error messages only.
    """
    found: dict[tuple[str, str], str] = {}
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("value"):
            value = str(ident["value"])
            found[(str(ident.get("system", ""))[:255], blind(value))] = value
    return found


def secondary_claims(resource: dict[str, Any] | None, blind: Blind) -> set[tuple[str, str]]:
    """Claim keys ``(system, blind(value))`` of the resource's person-level identifiers (CCCD, BHYT...)."""
    found: set[tuple[str, str]] = set()
    for ident in (resource or {}).get("identifier") or []:
        if isinstance(ident, dict) and ident.get("value") and is_secondary_identifier(ident):
            found.add((str(ident.get("system", ""))[:255], blind(str(ident["value"]))))
    return found


def reindex(
    conn: Connection,
    open_content: Callable[[str, str, int, bytes], bytes],
    blind: Blind,
    *,
    batch: int = BATCH,
) -> int:
    """Recompute every search-index row and identifier claim from current content; returns resources.

    Runs on the caller's transaction: callers run it in one transaction so no
    lookup ever sees half an index (new writers wait on the write lock).
    Every index table is rebuilt, not only the blinded tokens: names,
    addresses and birth dates are keyed hashes too (``fhir_store.blind_text``),
    and rows written before they were (clear ``search_string``/``search_date``)
    are replaced here (issue #18 item 5).
    """
    rc = resource_current
    last: tuple[str, str] = ("", "")
    done = 0
    while True:
        rows = conn.execute(
            select(rc.c.res_type, rc.c.res_id, rc.c.version, rc.c.content)
            .where(tuple_(rc.c.res_type, rc.c.res_id) > tuple_(*last), rc.c.deleted.is_(False))
            .order_by(rc.c.res_type, rc.c.res_id)
            .limit(batch)
        ).all()
        if not rows:
            return done
        new: dict[str, list[dict[str, Any]]] = {t.name: [] for t in (*INDEX_TABLES, identifier_claim)}
        by_type: dict[str, list[str]] = {}
        for res_type, res_id, version, content in rows:
            by_type.setdefault(res_type, []).append(res_id)
            if content is None:
                continue
            resource = orjson.loads(open_content(res_type, res_id, version, bytes(content)))
            key = {"res_type": res_type, "res_id": res_id}
            index = extract_index_rows(resource, blind)
            new["search_token"] += [{**key, "param": p, "system": s, "code": c} for p, s, c in index.tokens]
            new["search_string"] += [{**key, "param": p, "norm": n, "exact": e} for p, n, e in index.strings]
            new["search_date"] += [
                {**key, "param": p, "low_us": lo, "high_us": hi} for p, lo, hi in index.dates
            ]
            new["search_reference"] += [
                {**key, "param": p, "target_type": t, "target_id": i} for p, t, i in index.references
            ]
            new["identifier_claim"] += [
                {**key, "system": s, "value": v} for s, v in claimed_identifiers(resource, blind)
            ]
        for res_type, res_ids in by_type.items():
            for table in (*INDEX_TABLES, identifier_claim):
                conn.execute(delete(table).where(table.c.res_type == res_type, table.c.res_id.in_(res_ids)))
        for table in (*INDEX_TABLES, identifier_claim):
            if new[table.name]:
                conn.execute(insert(table), new[table.name])
        done += len(rows)
        last = (str(rows[-1][0]), str(rows[-1][1]))


def string_index_missing(conn: Connection) -> bool:
    """Resources with string parameters exist but no string row does: migration 0017 dropped the clear ones.

    Two ``LIMIT 1`` lookups, so every start can afford it; a store whose
    resources carry no name or address at all is simply reindexed again.
    """
    types = [t for t, spec in SEARCH_SPECS.items() if any(p.kind == "string" for p in spec.params.values())]
    rc = resource_current
    held = conn.execute(
        select(rc.c.res_id).where(rc.c.res_type.in_(types), rc.c.deleted.is_(False)).limit(1)
    ).first()
    return held is not None and conn.execute(select(search_string.c.res_id).limit(1)).first() is None


def has_index_rows(conn: Connection) -> bool:
    """Whether anything was ever indexed (a database without rows needs no reindex)."""
    claim = conn.execute(select(identifier_claim.c.res_id).limit(1)).first()
    token = conn.execute(select(search_token.c.res_id).limit(1)).first()
    return claim is not None or token is not None
