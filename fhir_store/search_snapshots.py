"""Frozen id lists behind multi-page search results (``_page_token`` links).

Why: FHIR paging links must keep returning the same result set while other
clients write (https://hl7.org/fhir/R4/http.html#paging); re-running the
query for page 2 would skip or repeat resources created or changed meanwhile.
The first page therefore stores the full id list (up to ``SNAPSHOT_LIMIT``)
under a random token; later pages read the list.  Snapshots expire after an
hour and are pruned when new ones are written.

A snapshot is an answer already authorised for one caller and one question,
so it is bound to both (ISO/IEC 27001:2022 A.8.3 information access
restriction): the row keeps a keyed digest of the client id, role, patient
compartment and the search parameters other than paging (:func:`binding`).  A
token presented by another caller, or with other search parameters, is
answered 404 (:class:`common.Concealed`, audited as a denial), never with the
frozen ids.  The table holds only a SHA-256 of the token, so a copy of the
database cannot replay live paging links.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable

import orjson
from sqlalchemy import Connection, Engine, delete, insert, select

from common import Concealed, InvalidInput
from fhir_store.database import writer
from fhir_store.model import RequestContext
from fhir_store.schema import search_snapshot
from fhir_store.search import SearchQuery

SNAPSHOT_LIMIT = 10_000
SNAPSHOT_TTL_US = 3600 * 1_000_000
# Domain separation: a binding digest can never equal the blind index of a stored value.
_BINDING_DOMAIN = "carebridge search snapshot binding\x00"


def _token_key(token: str) -> str:
    """What the table stores for a token (64 hex characters, the column's width)."""
    return hashlib.sha256(token.encode()).hexdigest()


def binding(query: SearchQuery, context: RequestContext | None, blind: Callable[[str], str]) -> str:
    """Keyed digest of who asked (client, role, compartment) and what (every non-paging parameter).

    ``query`` is the blinded, compartment-restricted query the store runs;
    parameters whose order does not change the answer are sorted.  Keyed with
    the store's blind key because the criteria can be names or birth dates.
    """
    who = (
        [context.client_id, context.role, sorted(context.patient_ids)]
        if context is not None
        else ["", "", []]
    )
    what = [
        query.resource_type,
        sorted([f.param, f.modifier or "", list(f.values)] for f in query.filters),
        [[name, descending] for name, descending in query.sort],
        sorted(list(i) for i in query.includes),
        sorted(list(i) for i in query.revincludes),
        query.summary or "",
        query.total or "",
        query.elements,
    ]
    return blind(_BINDING_DOMAIN + orjson.dumps([who, what]).decode())


def save_snapshot(engine: Engine, resource_type: str, ids: list[str], now_us: int, bound_to: str) -> str:
    """Freeze the id list of a multi-page result for the caller and query of ``bound_to``; returns the token.

    Written in its own write transaction: upgrading the search's read transaction to a
    writer fails at once on SQLite when another connection is writing.
    """
    token = secrets.token_urlsafe(18)
    with writer(engine).begin() as conn:
        conn.execute(delete(search_snapshot).where(search_snapshot.c.created_us < now_us - SNAPSHOT_TTL_US))
        conn.execute(
            insert(search_snapshot).values(
                token=_token_key(token),
                created_us=now_us,
                res_type=resource_type,
                query=bound_to,
                ids=orjson.dumps(ids).decode(),
                total=len(ids),
            )
        )
    return token


def load_snapshot(conn: Connection, query: SearchQuery, bound_to: str) -> tuple[list[str], int]:
    """The frozen ids and total behind ``query.page_token``.

    400 when the token is unknown or expired (run the search again); 404 when it
    belongs to another caller or another search (module docstring).
    """
    assert query.page_token is not None
    row = conn.execute(
        select(search_snapshot.c.ids, search_snapshot.c.total, search_snapshot.c.query).where(
            search_snapshot.c.token == _token_key(query.page_token)
        )
    ).first()
    if row is None:
        raise InvalidInput("the paging link has expired; run the search again", location="_page_token")
    if not secrets.compare_digest(str(row[2]), bound_to):
        raise Concealed(
            "no paging snapshot for this search and caller",
            location="_page_token",
            reason="page token of another caller or another search",
        )
    ids: list[str] = orjson.loads(row[0])
    return ids, int(row[1])
