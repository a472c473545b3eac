"""audit: append-only triggers on SQLite; PostgreSQL grants re-asserted

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03 15:30:00

Why (ISO/IEC 27001:2022 A.8.15, A.5.33): migration 0002 made the audit tables
append-only on PostgreSQL (triggers, and INSERT/SELECT only for the service
role ``carebridge_app``); SQLite had no such guard, so any code path or
operator with a SQL shell could ``UPDATE`` or ``DELETE`` an audit row by
mistake.  SQLite has no roles, and anyone who can write the file can drop a
trigger: these triggers stop accidents, not attackers.  What makes
deliberate tampering evident on both backends is the chain and its anchors
outside the database (``audit.anchors``; docs/compliance.md).

On PostgreSQL the service role's rights on the three audit tables are set
again to exactly SELECT and INSERT, so a database restored from an old dump
or a hand-made grant cannot leave UPDATE, DELETE or TRUNCATE behind.
"""

from __future__ import annotations

from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

AUDIT_TABLES = ("audit_event", "audit_event_key", "audit_checkpoint")
APP_ROLE = "carebridge_app"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in AUDIT_TABLES:
            for operation in ("UPDATE", "DELETE"):
                op.execute(
                    f"CREATE TRIGGER IF NOT EXISTS {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
                    f"BEGIN SELECT RAISE(ABORT, 'audit records are append-only ({operation} on {table})'); END"
                )
        return
    tables = ", ".join(AUDIT_TABLES)
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                EXECUTE 'REVOKE ALL ON {tables} FROM {APP_ROLE}';
                EXECUTE 'GRANT SELECT, INSERT ON {tables} TO {APP_ROLE}';
            END IF;
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in AUDIT_TABLES:
            for operation in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{operation}")
