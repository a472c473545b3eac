"""audit trail: hash-chained audit_event, checkpoints, PostgreSQL immutability

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 14:00:00

Why (ISO/IEC 27001:2022 A.8.15, A.5.33; Circular 46/2018 Art. 8 traceability):
audit records must be append-only and tamper-evident.  The hash chain and the
signed checkpoints (``audit/``) make tampering *evident* on every backend; on
PostgreSQL this migration also makes it *hard*:

* triggers reject UPDATE and DELETE (per row) and TRUNCATE (per statement) on the
  audit tables, even for the table owner;
* a NOLOGIN role ``carebridge_app`` gets SELECT/INSERT/UPDATE/DELETE on the store's
  tables but only SELECT/INSERT on the audit tables, so the application cannot
  change audit rows even with the trigger disabled (only the owner or a
  superuser can disable a trigger).

Operator: run migrations as the owner (e.g. ``carebridge_owner``) and the
service as a login role that is a member of ``carebridge_app``, not the owner::

    CREATE ROLE carebridge_svc LOGIN PASSWORD '...' IN ROLE carebridge_app;
    CAREBRIDGE_DATABASE_URL=postgresql://carebridge_svc@db/carebridge carebridge serve

(``carebridge serve`` runs migrations on start: with a non-owner role run
``carebridge serve`` once as the owner, or apply migrations separately first.)
Creating the role needs CREATEROLE; without it the migration only emits a
NOTICE and the grants are skipped.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_AUDIT_TABLES = ("audit_event", "audit_event_patient", "audit_checkpoint")
APP_ROLE = "carebridge_app"


def upgrade() -> None:
    op.create_table(
        "audit_event",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("recorded_us", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=1), nullable=False),
        sa.Column("type", sa.String(length=40), nullable=False),
        sa.Column("subtype", sa.String(length=40), nullable=True),
        sa.Column("outcome", sa.String(length=2), nullable=False),
        sa.Column("agent", sa.String(length=128), nullable=True),
        sa.Column("patient_id", sa.String(length=64), nullable=True),
        sa.Column("entity", sa.String(length=128), nullable=True),
        sa.Column("purpose", sa.String(length=64), nullable=True),
        sa.Column("request_id", sa.String(length=128), nullable=True),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.Column("mac", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_event")),
        sa.UniqueConstraint("event_id", name=op.f("uq_audit_event_event_id")),
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_event_recorded_us"), ["recorded_us"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_audit_event_patient_id_recorded_us"), ["patient_id", "recorded_us"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_audit_event_agent_recorded_us"), ["agent", "recorded_us"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_audit_event_entity"), ["entity"], unique=False)

    op.create_table(
        "audit_event_patient",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", "patient_id", name=op.f("pk_audit_event_patient")),
    )
    with op.batch_alter_table("audit_event_patient", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_audit_event_patient_patient_id_seq"), ["patient_id", "seq"], unique=False
        )

    op.create_table(
        "audit_checkpoint",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_audit_checkpoint")),
    )

    if op.get_bind().dialect.name == "postgresql":
        _postgres_immutability()


def _postgres_immutability() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION carebridge_audit_immutable() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'audit records are append-only (% on %)', TG_OP, TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    for table in _AUDIT_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION carebridge_audit_immutable()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION carebridge_audit_immutable()"
        )
    # Roles are cluster-wide: create once, tolerate a concurrent creator or no CREATEROLE right.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                CREATE ROLE {APP_ROLE} NOLOGIN;
            END IF;
        EXCEPTION
            WHEN duplicate_object OR unique_violation THEN NULL;
            WHEN insufficient_privilege THEN
                RAISE NOTICE 'no CREATEROLE: role {APP_ROLE} not created, grants skipped';
        END
        $$
        """
    )
    audit = ", ".join(_AUDIT_TABLES)
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                EXECUTE 'GRANT USAGE ON SCHEMA public TO {APP_ROLE}';
                EXECUTE 'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE}';
                EXECUTE 'GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}';
                EXECUTE 'REVOKE UPDATE, DELETE, TRUNCATE ON {audit} FROM {APP_ROLE}';
                -- tables of later migrations (created by this same owner) get the usual rights
                EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public '
                        'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {APP_ROLE}';
                EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public '
                        'GRANT USAGE, SELECT ON SEQUENCES TO {APP_ROLE}';
            END IF;
        END
        $$
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _AUDIT_TABLES:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_change ON {table}")
            op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
        op.execute("DROP FUNCTION IF EXISTS carebridge_audit_immutable()")
    op.drop_table("audit_checkpoint")
    with op.batch_alter_table("audit_event_patient", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_event_patient_patient_id_seq"))
    op.drop_table("audit_event_patient")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_event_entity"))
        batch_op.drop_index(batch_op.f("ix_audit_event_agent_recorded_us"))
        batch_op.drop_index(batch_op.f("ix_audit_event_patient_id_recorded_us"))
        batch_op.drop_index(batch_op.f("ix_audit_event_recorded_us"))
    op.drop_table("audit_event")
