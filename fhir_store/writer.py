"""Persisting one resource version: version row, current row, index rows, identifier claims.

All functions take an open :class:`Connection` inside the caller's transaction;
nothing here commits.  Content is sealed and opened with the store's
:class:`~fhir_store.content_cipher.StoreCipher`, and identifier values are
claimed and indexed as its keyed hashes (``fhir_store.blind_index``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, select, tuple_

from common import VersionConflict
from fhir_store.blind_index import claimed_identifiers, secondary_claims
from fhir_store.content_cipher import StoreCipher
from fhir_store.driver_sql import BulkInsert, DriverQuery, MultiInsert
from fhir_store.instants import format_instant
from fhir_store.model import StoredResource
from fhir_store.schema import (
    INDEX_TABLES,
    identifier_claim,
    resource_current,
    resource_version,
    search_date,
    search_reference,
    search_string,
    search_token,
)
from fhir_store.search_params import extract_index_rows

# The statements every write runs go straight to the driver (fhir_store.driver_sql):
# through SQLAlchemy Core their Python overhead outweighs the database work itself.
_LOAD_CURRENT = DriverQuery(
    "SELECT version, last_updated_us, deleted, content FROM resource_current"
    " WHERE res_type = :t AND res_id = :i"
)
_CLAIM_OWNER = DriverQuery(
    "SELECT res_id FROM identifier_claim WHERE res_type = :t AND system = :s AND value = :v"
)
_CLAIM_OWNER_CURRENT = DriverQuery(
    "SELECT c.res_id, r.version, r.last_updated_us, r.deleted, r.content FROM identifier_claim c"
    " LEFT JOIN resource_current r ON r.res_type = c.res_type AND r.res_id = c.res_id"
    " WHERE c.res_type = :t AND c.system = :s AND c.value = :v"
)
_CLAIMS_HELD = DriverQuery("SELECT system, value FROM identifier_claim WHERE res_type = :t AND res_id = :i")
_CLAIM_RELEASE = DriverQuery(
    "DELETE FROM identifier_claim WHERE res_type = :t AND system = :s AND value = :v"
)
_INDEX_CLEAR = tuple(
    DriverQuery(f"DELETE FROM {table.name} WHERE res_type = :t AND res_id = :i") for table in INDEX_TABLES
)
_UPDATE_CURRENT_SQL = (
    "UPDATE resource_current SET version = :new_version, last_updated_us = :now, deleted = :deleted,"
    " content = :content WHERE res_type = :t AND res_id = :i AND version = :expected"
)
_UPDATE_CURRENT = DriverQuery(_UPDATE_CURRENT_SQL)
# PostgreSQL: the whole preamble of a new version of an existing resource in one round trip
# instead of six -- move the current row (optimistic check), drop the old index rows, and read
# the claims held.  The first output row carries the updated-row count, the others the claims.
_REPLACE_CURRENT = DriverQuery(
    f"WITH updated AS ({_UPDATE_CURRENT_SQL} RETURNING 1), "
    + ", ".join(
        f"clear_{table.name} AS (DELETE FROM {table.name} WHERE res_type = :t AND res_id = :i)"
        for table in INDEX_TABLES
    )
    + " SELECT (SELECT count(*) FROM updated), NULL, NULL"
    " UNION ALL SELECT NULL, system, value FROM identifier_claim WHERE res_type = :t AND res_id = :i"
)
_CLAIM_OWNERS = select(identifier_claim.c.system, identifier_claim.c.value, identifier_claim.c.res_id).where(
    identifier_claim.c.res_type == bindparam("t"),
    # (system, value) pairs, not values alone: each pair is a primary-key probe, a bare value is a scan
    tuple_(identifier_claim.c.system, identifier_claim.c.value).in_(bindparam("pairs", expanding=True)),
)

_KEY = ("res_type", "res_id")
CURRENT_ROWS = BulkInsert(resource_current, (*_KEY, "version", "last_updated_us", "deleted", "content"))
VERSION_ROWS = BulkInsert(
    resource_version, (*_KEY, "version", "last_updated_us", "deleted", "method", "content")
)
CLAIM_ROWS = BulkInsert(identifier_claim, ("res_type", "system", "value", "res_id"))
TOKEN_ROWS = BulkInsert(search_token, (*_KEY, "param", "system", "code"))
STRING_ROWS = BulkInsert(search_string, (*_KEY, "param", "norm", "exact"))
DATE_ROWS = BulkInsert(search_date, (*_KEY, "param", "low_us", "high_us"))
REFERENCE_ROWS = BulkInsert(search_reference, (*_KEY, "param", "target_type", "target_id"))
_ALL_ROWS = MultiInsert(
    (CURRENT_ROWS, VERSION_ROWS, CLAIM_ROWS, TOKEN_ROWS, STRING_ROWS, DATE_ROWS, REFERENCE_ROWS)
)


@dataclass
class PendingRows:
    """Insert-only rows of one transaction, sent together in one statement at the end.

    Every statement is a database round trip; a mapped HL7 message writes two
    resources whose current, version, index and claim rows can go out together.
    A resource written a second time in the same transaction flushes first, and
    anything that reads what this transaction wrote (merge, hooks) runs after a
    flush, so nothing reads a stale view of its own rows.
    """

    rows: dict[BulkInsert, list[tuple[Any, ...]]] = field(default_factory=dict)
    touched: set[tuple[str, str]] = field(default_factory=set)
    claims: dict[tuple[str, str, str], str] = field(default_factory=dict)  # (type, system, value) -> id
    # False: a new resource's identifiers are inserted without asking who owns them first; the
    # primary key still refuses a duplicate, and the retry (with checks) names the owner.
    check_claims: bool = True

    def add(self, target: BulkInsert, rows: list[tuple[Any, ...]]) -> None:
        if rows:
            self.rows.setdefault(target, []).extend(rows)

    def flush(self, conn: Connection) -> None:
        _ALL_ROWS.execute(conn, self.rows)
        self.rows.clear()
        self.touched.clear()
        self.claims.clear()


def load_current(
    conn: Connection, resource_type: str, resource_id: str, cipher: StoreCipher
) -> StoredResource | None:
    row = _LOAD_CURRENT.first(conn, {"t": resource_type, "i": resource_id})
    return None if row is None else _opened(resource_type, resource_id, row, cipher)


def _opened(resource_type: str, resource_id: str, row: Sequence[Any], cipher: StoreCipher) -> StoredResource:
    """A ``(version, last_updated_us, deleted, content)`` row of ``resource_current``, content opened."""
    content = row[3] if row[3] is None or isinstance(row[3], bytes) else bytes(row[3])
    if content is not None:
        content = cipher.open_resource(resource_type, resource_id, row[0], content)
    return StoredResource(resource_type, resource_id, row[0], row[1], bool(row[2]), content)


def find_identifier_owner(conn: Connection, resource_type: str, system: str, value: str) -> str | None:
    """Owner of a claim; ``value`` is the blinded value (``StoreCipher.blind``), as stored."""
    row = _CLAIM_OWNER.first(conn, {"t": resource_type, "s": system, "v": value})
    return None if row is None else str(row[0])


def find_identifier_owner_current(
    conn: Connection, resource_type: str, system: str, value: str, cipher: StoreCipher
) -> tuple[str, StoredResource | None] | None:
    """Owner of a claim and its current version, read together (one round trip instead of two).

    An upsert by business identifier (every HL7 message) looks the owner up and
    then loads it: the join answers both.  The version is as of this statement;
    a concurrent writer is caught by the optimistic check of the update.
    """
    row = _CLAIM_OWNER_CURRENT.first(conn, {"t": resource_type, "s": system, "v": value})
    if row is None:
        return None
    owner = str(row[0])
    return owner, None if row[1] is None else _opened(resource_type, owner, row[1:], cipher)


def claim_owners(
    conn: Connection, resource_type: str, keys: set[tuple[str, str]], pending: PendingRows
) -> dict[tuple[str, str], str]:
    """Who holds each claim key ``(system, blinded value)``, this transaction's unsent claims included."""
    found: dict[tuple[str, str], str] = {}
    if keys:
        query = {"t": resource_type, "pairs": sorted(keys)}
        found = {(str(r[0]), str(r[1])): str(r[2]) for r in conn.execute(_CLAIM_OWNERS, query)}
    for system, value in keys:
        owner = pending.claims.get((resource_type, system, value))
        if owner is not None:
            found[(system, value)] = owner
    return found


def _sync_claims(
    conn: Connection,
    resource_type: str,
    resource_id: str,
    wanted: set[tuple[str, str]],
    held: set[tuple[str, str]],
    *,
    is_new: bool,
    batch: PendingRows,
    carried: tuple[StoredResource | None, StoreCipher],
) -> None:
    """Claim every business identifier; a claim held by another resource is a conflict.

    The primary key on (type, system, value) is what makes concurrent duplicate
    creation impossible; the explicit check only produces a readable error, which
    never names the owner (another patient's id is not the sender's business).
    A secondary identifier the previous version (``carried``) already had
    while another Patient held its claim is a known possible duplicate: it stays
    unclaimed instead of refusing the update (``fhir_store.duplicates``).
    """
    for system, value in held - wanted:
        _CLAIM_RELEASE.rowcount(conn, {"t": resource_type, "s": system, "v": value})
    to_add = wanted - held
    if not to_add:
        return
    owners: list[tuple[str, str, str]] = []
    if batch.check_claims or not is_new:
        query = {"t": resource_type, "pairs": sorted(to_add)}
        owners = [(r[0], r[1], r[2]) for r in conn.execute(_CLAIM_OWNERS, query)]
    owners += [
        (s, v, batch.claims[(resource_type, s, v)])
        for s, v in to_add
        if (resource_type, s, v) in batch.claims
    ]
    kept: set[tuple[str, str]] | None = None  # computed on the first conflict only (blinding costs)
    for system, value, owner in owners:
        if (system, value) in to_add and owner != resource_id:
            if kept is None:
                previous, cipher = carried
                kept = set() if previous is None else secondary_claims(previous.resource(), cipher.blind)
            if (system, value) in kept:
                to_add.discard((system, value))
                continue
            raise VersionConflict(  # neither the value (a direct identifier) nor the owner is named
                f"an identifier of system {system} already belongs to another {resource_type}",
                location=f"{resource_type}.identifier",
            )
    if not to_add:
        return
    batch.claims.update({(resource_type, s, v): resource_id for s, v in to_add})
    batch.add(CLAIM_ROWS, [(resource_type, s, v, resource_id) for s, v in sorted(to_add)])


def _queue_index_rows(
    resource_type: str,
    resource_id: str,
    resource: dict[str, Any] | None,
    *,
    batch: PendingRows,
    cipher: StoreCipher,
) -> None:
    """Queue the index rows of the new version (the old ones are gone: :func:`_replace_current`)."""
    if resource is None:
        return
    rows = extract_index_rows(resource, cipher.blind)
    t, i = resource_type, resource_id
    batch.add(TOKEN_ROWS, [(t, i, *row) for row in rows.tokens])
    batch.add(STRING_ROWS, [(t, i, *row) for row in rows.strings])
    batch.add(DATE_ROWS, [(t, i, *row) for row in rows.dates])
    batch.add(REFERENCE_ROWS, [(t, i, *row) for row in rows.references])


def _replace_current(conn: Connection, update: dict[str, Any]) -> tuple[int, set[tuple[str, str]]]:
    """Move the current row to the new version and clear the old index rows; (rows updated, claims held)."""
    key = {"t": update["t"], "i": update["i"]}
    if conn.dialect.name == "postgresql":
        rows = _REPLACE_CURRENT.all(conn, update)
        changed = next(int(r[0]) for r in rows if r[0] is not None)
        return changed, {(r[1], r[2]) for r in rows if r[0] is None}
    changed = _UPDATE_CURRENT.rowcount(conn, update)
    for statement in _INDEX_CLEAR:
        statement.rowcount(conn, key)
    return changed, {(r[0], r[1]) for r in _CLAIMS_HELD.all(conn, key)}


def write_version(
    conn: Connection,
    resource_type: str,
    resource_id: str,
    resource: dict[str, Any] | None,
    previous: StoredResource | None,
    now_us: int,
    pending: PendingRows | None = None,
    *,
    cipher: StoreCipher,
    unclaimed: frozenset[tuple[str, str]] = frozenset(),
) -> StoredResource:
    """Write a new version (``resource`` None means delete) and return it as stored.

    With ``pending``, insert-only rows are queued for the caller to flush once per
    transaction; without it they are written before returning.  Rows get the
    sealed content; the returned version carries the plaintext (served bytes).
    ``unclaimed``: claim keys left to the resource that holds them (a possible
    duplicate's shared CCCD/BHYT, decided by ``fhir_store.duplicates``).
    """
    batch = pending if pending is not None else PendingRows()
    if (resource_type, resource_id) in batch.touched:
        batch.flush(conn)  # written before in this transaction: make its rows visible first
    batch.touched.add((resource_type, resource_id))
    version = 1 if previous is None else previous.version_id + 1
    method = "DELETE" if resource is None else ("POST" if previous is None else "PUT")
    content: bytes | None = None
    if resource is not None:
        meta = dict(resource.get("meta") or {})
        meta["versionId"] = str(version)
        meta["lastUpdated"] = format_instant(now_us)
        body = {"resourceType": resource_type, "id": resource_id, **resource}
        body["id"] = resource_id
        body["meta"] = meta
        content = orjson.dumps(body)
    sealed = None if content is None else cipher.seal_resource(resource_type, resource_id, version, content)
    deleted = resource is None
    batch.add(VERSION_ROWS, [(resource_type, resource_id, version, now_us, deleted, method, sealed)])
    held: set[tuple[str, str]] = set()  # a brand-new resource has no claims and no index rows
    if previous is None:
        batch.add(CURRENT_ROWS, [(resource_type, resource_id, version, now_us, deleted, sealed)])
    else:
        update = {
            "t": resource_type,
            "i": resource_id,
            "expected": previous.version_id,
            "new_version": version,
            "now": now_us,
            "deleted": deleted,
            "content": sealed,
        }
        changed, held = _replace_current(conn, update)
        if changed != 1:
            raise VersionConflict(f"{resource_type}/{resource_id} was changed concurrently")
    is_new = previous is None
    _queue_index_rows(resource_type, resource_id, resource, batch=batch, cipher=cipher)
    wanted = set() if resource is None else set(claimed_identifiers(resource, cipher.blind)) - unclaimed
    carried = None if previous is None or previous.deleted else previous
    _sync_claims(
        conn, resource_type, resource_id, wanted, held, is_new=is_new, batch=batch, carried=(carried, cipher)
    )
    if pending is None:
        batch.flush(conn)
    return StoredResource(resource_type, resource_id, version, now_us, resource is None, content)
