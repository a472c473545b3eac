"""Where a CRM's change feed begins: at its registration, earlier only by an operator's grant.

Why (Law 91/2025/QH15 Art. 9; Decree 356/2025/ND-CP Art. 7 minimum
necessary): events are decided per CRM when they are written, but a CRM
client registered later must not read what was written before it existed —
patients consented to the recipients of their time, and some have withdrawn
since.  Each CRM's start is the outbox head at its registration
(:func:`register_feed`, called when its OAuth client is created); the feed
and the webhook dispatcher serve only events after it (``delivery.read_feed``).
A CRM without a row reads nothing until it is registered
(:func:`ensure_registered` registers it at the head on first contact).
Reading the past is an explicit, audited operator decision
(:func:`grant_backlog`, ``carebridge crm grant-backlog``).
"""

from __future__ import annotations

from sqlalchemy import Connection, Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from crm_bridge.schema import crm_feed_start, crm_outbox
from fhir_store import for_reading, for_writing, now_us


def _head(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(crm_outbox.c.seq), 0))).scalar() or 0)


def feed_start(conn: Connection, crm_id: str) -> int | None:
    """The seq after which the CRM reads, or ``None`` when it is not registered."""
    value = conn.execute(select(crm_feed_start.c.start_seq).where(crm_feed_start.c.crm_id == crm_id)).scalar()
    return None if value is None else int(value)


def register_feed(conn: Connection, crm_id: str) -> int:
    """Start the CRM's feed at the current outbox head (kept if it is registered already)."""
    existing = feed_start(conn, crm_id)
    if existing is not None:
        return existing
    head, now = _head(conn), now_us()
    conn.execute(
        insert(crm_feed_start).values(crm_id=crm_id, start_seq=head, registered_us=now, updated_us=now)
    )
    return head


def ensure_registered(engine: Engine, crm_id: str) -> int:
    """The CRM's start, registering it at the head when no row exists (first contact)."""
    with for_reading(engine).connect() as conn:
        existing = feed_start(conn, crm_id)
    if existing is not None:
        return existing
    try:
        with for_writing(engine).begin() as conn:
            return register_feed(conn, crm_id)
    except IntegrityError:  # another request registered it meanwhile: its start stands
        with for_reading(engine).connect() as conn:
            return feed_start(conn, crm_id) or 0


def grant_backlog(conn: Connection, crm_id: str, from_seq: int) -> tuple[int, int]:
    """Let the CRM read events after ``from_seq`` (an operator's decision; the caller audits it).

    Returns (old start, new start).  The CRM must be registered.
    """
    old = feed_start(conn, crm_id)
    if old is None:
        old = register_feed(conn, crm_id)
    conn.execute(
        update(crm_feed_start)
        .where(crm_feed_start.c.crm_id == crm_id)
        .values(start_seq=from_seq, updated_us=now_us())
    )
    return old, from_seq
