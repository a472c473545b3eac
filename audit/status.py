"""Reads other packages make on the audit tables: chain position and one stored event.

Why here: the audit tables (``audit.schema``) belong to this package; the
gateway's metrics and its ``AuditEvent`` read route ask by name rather than
writing SQL on ``audit_event``.  Reading an event does not record the read:
the caller audits it (ISO/IEC 27001:2022 A.8.15, reading the log is logged).
"""

from __future__ import annotations

from sqlalchemy import Connection, func, select

from audit.schema import audit_checkpoint, audit_event


def chain_length(conn: Connection) -> int:
    """Events in the hash chain: ``seq`` is gap-free from 1 (``audit.schema``), so MAX is an index lookup."""
    length = conn.execute(select(func.max(audit_event.c.seq))).scalar()
    return int(length or 0)


def last_checkpoint(conn: Connection) -> tuple[int, int] | None:
    """``(seq, created_us)`` of the last signed checkpoint, None before the first."""
    cp = conn.execute(
        select(audit_checkpoint.c.seq, audit_checkpoint.c.created_us)
        .order_by(audit_checkpoint.c.seq.desc())
        .limit(1)
    ).first()
    return (int(cp[0]), int(cp[1])) if cp else None


def stored_event(conn: Connection, event_id: str) -> bytes | None:
    """The stored JSON of one AuditEvent by id, None when there is none."""
    content = conn.execute(
        select(audit_event.c.content).where(audit_event.c.event_id == event_id)
    ).scalar_one_or_none()
    return None if content is None else bytes(content)
