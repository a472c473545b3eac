"""Frozen id lists behind multi-page search results (``_page`` tokens).

Why: FHIR paging links must keep returning the same result set while other
clients write (https://hl7.org/fhir/R4/http.html#paging); re-running the
query for page 2 would skip or repeat resources created or changed meanwhile.
The first page therefore stores the full id list (up to ``SNAPSHOT_LIMIT``)
under a random token; later pages read the list.  Snapshots expire after an
hour and are pruned when new ones are written.
"""

from __future__ import annotations

import secrets

import orjson
from sqlalchemy import Connection, Engine, delete, insert, select

from common import InvalidInput
from fhir_store.database import writer
from fhir_store.schema import search_snapshot
from fhir_store.search import SearchQuery

SNAPSHOT_LIMIT = 10_000
SNAPSHOT_TTL_US = 3600 * 1_000_000


def save_snapshot(engine: Engine, resource_type: str, ids: list[str], now_us: int) -> str:
    """Freeze the id list of a multi-page result; returns the page token.

    Written in its own write transaction: upgrading the search's read transaction to a
    writer fails at once on SQLite when another connection is writing.
    """
    token = secrets.token_urlsafe(18)
    with writer(engine).begin() as conn:
        conn.execute(delete(search_snapshot).where(search_snapshot.c.created_us < now_us - SNAPSHOT_TTL_US))
        conn.execute(
            insert(search_snapshot).values(
                token=token,
                created_us=now_us,
                res_type=resource_type,
                query="",
                ids=orjson.dumps(ids).decode(),
                total=len(ids),
            )
        )
    return token


def load_snapshot(conn: Connection, query: SearchQuery) -> tuple[list[str], int]:
    """The frozen ids and total behind ``query.page_token``; 400 when it expired or does not fit."""
    row = conn.execute(
        select(search_snapshot.c.ids, search_snapshot.c.total, search_snapshot.c.res_type).where(
            search_snapshot.c.token == query.page_token
        )
    ).first()
    if row is None or row[2] != query.resource_type:
        raise InvalidInput("the paging link has expired; run the search again", location="_page")
    ids: list[str] = orjson.loads(row[0])
    return ids, int(row[1])
