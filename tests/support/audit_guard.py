"""Lift the audit tables' append-only guards inside one transaction, as an attacker with the rights would.

PostgreSQL: ``ALTER TABLE ... DISABLE TRIGGER USER`` (the owner or a superuser only).
SQLite: the triggers of migration 0015 are dropped and re-created (whoever can write
the file can do this).  Tests use it to show the chain and its anchors still catch the change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, text

AUDIT_TABLES = ("audit_event", "audit_event_key", "audit_checkpoint")


def _sqlite_trigger(table: str, operation: str) -> str:
    return (
        f"CREATE TRIGGER {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'audit records are append-only ({operation} on {table})'); END"
    )


@contextmanager
def guards_lifted(conn: Connection) -> Iterator[None]:
    pg = conn.dialect.name == "postgresql"
    for table in AUDIT_TABLES:
        if pg:
            conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        else:
            for operation in ("update", "delete"):
                conn.execute(text(f"DROP TRIGGER IF EXISTS {table}_no_{operation}"))
    yield
    for table in AUDIT_TABLES:
        if pg:
            conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
        else:
            for operation in ("UPDATE", "DELETE"):
                conn.execute(text(_sqlite_trigger(table, operation)))
