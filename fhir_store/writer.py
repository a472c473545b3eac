"""Persisting one resource version: version row, current row, index rows, identifier claims.

All functions take an open :class:`Connection` inside the caller's transaction;
nothing here commits.
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection, delete, insert, select, update

from common.errors import VersionConflict
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


def load_current(conn: Connection, resource_type: str, resource_id: str) -> StoredResource | None:
    row = conn.execute(
        select(
            resource_current.c.version,
            resource_current.c.last_updated_us,
            resource_current.c.deleted,
            resource_current.c.content,
        ).where(resource_current.c.res_type == resource_type, resource_current.c.res_id == resource_id)
    ).first()
    if row is None:
        return None
    return StoredResource(resource_type, resource_id, row[0], row[1], bool(row[2]), row[3])


def _identifiers(resource: dict[str, Any]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for ident in resource.get("identifier") or []:
        if isinstance(ident, dict) and ident.get("value"):
            found.add((str(ident.get("system", ""))[:255], str(ident["value"])[:255]))
    return found


def find_identifier_owner(conn: Connection, resource_type: str, system: str, value: str) -> str | None:
    row = conn.execute(
        select(identifier_claim.c.res_id).where(
            identifier_claim.c.res_type == resource_type,
            identifier_claim.c.system == system,
            identifier_claim.c.value == value,
        )
    ).first()
    return None if row is None else str(row[0])


def _sync_claims(
    conn: Connection, resource_type: str, resource_id: str, wanted: set[tuple[str, str]], *, is_new: bool
) -> None:
    """Claim every business identifier; a claim held by another resource is a conflict.

    The primary key on (type, system, value) is what makes concurrent duplicate
    creation impossible; the explicit check only produces a readable error.
    """
    held = (
        set()
        if is_new
        else {
            (row[0], row[1])
            for row in conn.execute(
                select(identifier_claim.c.system, identifier_claim.c.value).where(
                    identifier_claim.c.res_type == resource_type, identifier_claim.c.res_id == resource_id
                )
            )
        }
    )
    for system, value in held - wanted:
        conn.execute(
            delete(identifier_claim).where(
                identifier_claim.c.res_type == resource_type,
                identifier_claim.c.system == system,
                identifier_claim.c.value == value,
            )
        )
    to_add = wanted - held
    for system, value in to_add:
        owner = find_identifier_owner(conn, resource_type, system, value)
        if owner is not None and owner != resource_id:
            raise VersionConflict(
                f"identifier {system}|{value} already belongs to {resource_type}/{owner}",
                location=f"{resource_type}.identifier",
            )
    if to_add:
        conn.execute(
            insert(identifier_claim),
            [
                {"res_type": resource_type, "system": s, "value": v, "res_id": resource_id}
                for s, v in sorted(to_add)
            ],
        )


def _rewrite_index(
    conn: Connection, resource_type: str, resource_id: str, resource: dict[str, Any] | None, *, is_new: bool
) -> None:
    if not is_new:  # a brand-new resource has no index rows to remove
        for table in INDEX_TABLES:
            conn.execute(
                delete(table).where(table.c.res_type == resource_type, table.c.res_id == resource_id)
            )
    if resource is None:
        return
    rows = extract_index_rows(resource)
    key = {"res_type": resource_type, "res_id": resource_id}
    if rows.tokens:
        conn.execute(
            insert(search_token), [{**key, "param": p, "system": s, "code": c} for p, s, c in rows.tokens]
        )
    if rows.strings:
        conn.execute(
            insert(search_string), [{**key, "param": p, "norm": n, "exact": e} for p, n, e in rows.strings]
        )
    if rows.dates:
        conn.execute(
            insert(search_date),
            [{**key, "param": p, "low_us": lo, "high_us": hi} for p, lo, hi in rows.dates],
        )
    if rows.references:
        conn.execute(
            insert(search_reference),
            [{**key, "param": p, "target_type": t, "target_id": i} for p, t, i in rows.references],
        )


def write_version(
    conn: Connection,
    resource_type: str,
    resource_id: str,
    resource: dict[str, Any] | None,
    previous: StoredResource | None,
    now_us: int,
) -> StoredResource:
    """Write a new version (``resource`` None means delete) and return it as stored."""
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
    conn.execute(
        insert(resource_version).values(
            res_type=resource_type,
            res_id=resource_id,
            version=version,
            last_updated_us=now_us,
            deleted=resource is None,
            method=method,
            content=content,
        )
    )
    values = {"version": version, "last_updated_us": now_us, "deleted": resource is None, "content": content}
    if previous is None:
        conn.execute(insert(resource_current).values(res_type=resource_type, res_id=resource_id, **values))
    else:
        result = conn.execute(
            update(resource_current)
            .where(
                resource_current.c.res_type == resource_type,
                resource_current.c.res_id == resource_id,
                resource_current.c.version == previous.version_id,
            )
            .values(**values)
        )
        if result.rowcount != 1:
            raise VersionConflict(f"{resource_type}/{resource_id} was changed concurrently")
    is_new = previous is None
    _rewrite_index(conn, resource_type, resource_id, resource, is_new=is_new)
    wanted = set() if resource is None else _identifiers(resource)
    _sync_claims(conn, resource_type, resource_id, wanted, is_new=is_new)
    return StoredResource(resource_type, resource_id, version, now_us, resource is None, content)
