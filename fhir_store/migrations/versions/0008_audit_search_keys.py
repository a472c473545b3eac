"""audit: patient and entity searches through one key table (audit_event_key)

Revision ID: 0008
Revises: 0007

Why (issue #4, measured on SQLite, docs/benchmarks.md): every audit row went
into two random-key indexes on ``audit_event`` -- ``(patient_id,
recorded_us)`` and ``entity`` -- and the multi-patient links into
``audit_event_patient``.  A random-key B-tree insert was the largest part
of an audited read's SQLite cost, and it grows as the trail outgrows the page
cache.  The commonest events (a Patient read or change) name the same
reference twice, as patient and as entity, so ``audit_event_key`` keeps one
row per distinct reference of an event (``Patient/<id>`` with ``patient``
true; the entity without ``/_history/<v>``), and both searches use its
``(key, patient, seq)`` index: one random insert per such event instead of
two.  Its primary key ``(seq, key)`` grows in chain order.

The table is backfilled from the columns (which ``carebridge audit verify``
checks against each event's content, so the keys match what the verifier
derives), then the two indexes and ``audit_event_patient`` are dropped.  On
PostgreSQL the new table gets the append-only triggers of migration 0002 and
``carebridge_app`` may only SELECT and INSERT it.

PostgreSQL also gets ``carebridge_audit_head(lock_key)``: the chain lock and
the head read in one statement (``audit.chain_sql``).  They had to be two
statements because under READ COMMITTED the head must be read with a snapshot
taken *after* the lock is granted; a VOLATILE function takes a fresh snapshot
for each query it runs, so its head read still sees the previous holder's
commit.  One statement less per audited change inside the write transaction.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

APP_ROLE = "carebridge_app"
TABLE = "audit_event_key"


def _base(dialect: str) -> str:
    """SQL for the entity without its ``/_history/<v>`` suffix (``audit.rows.event_keys``)."""
    if dialect == "postgresql":
        return "split_part(e.entity, '/_history/', 1)"
    return (
        "CASE WHEN instr(e.entity, '/_history/') > 0 "
        "THEN substr(e.entity, 1, instr(e.entity, '/_history/') - 1) ELSE e.entity END"
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        TABLE,
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("patient", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("seq", "key", name=op.f("pk_audit_event_key")),
        sqlite_with_rowid=False,
    )
    # patients first (multi-patient events from their links, the others from patient_id), then entities
    op.execute(
        f"INSERT INTO {TABLE} (seq, key, patient) "
        "SELECT DISTINCT seq, 'Patient/' || patient_id, TRUE FROM audit_event_patient"
    )
    op.execute(
        f"INSERT INTO {TABLE} (seq, key, patient) "
        "SELECT e.seq, 'Patient/' || e.patient_id, TRUE FROM audit_event e "
        "WHERE e.patient_id IS NOT NULL "
        "AND NOT EXISTS (SELECT 1 FROM audit_event_patient p WHERE p.seq = e.seq)"
    )
    base = _base(dialect)
    op.execute(
        f"INSERT INTO {TABLE} (seq, key, patient) "
        f"SELECT e.seq, {base}, FALSE FROM audit_event e WHERE e.entity IS NOT NULL "
        f"AND NOT EXISTS (SELECT 1 FROM {TABLE} k WHERE k.seq = e.seq AND k.key = {base})"
    )
    op.create_index(op.f("ix_audit_event_key_key_patient_seq"), TABLE, ["key", "patient", "seq"])
    op.drop_index("ix_audit_event_patient_id_recorded_us", table_name="audit_event")
    op.drop_index("ix_audit_event_entity", table_name="audit_event")
    op.drop_table("audit_event_patient")  # its triggers go with it
    if dialect == "postgresql":
        _append_only(TABLE)
        op.execute(HEAD_FUNCTION)


HEAD_FUNCTION = """
CREATE OR REPLACE FUNCTION carebridge_audit_head(lock_key bigint, OUT seq bigint, OUT hash bytea)
RETURNS SETOF record LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(lock_key);
    -- a new snapshot, taken after the lock: it sees the previous holder's commit
    RETURN QUERY SELECT e.seq, e.hash FROM audit_event e ORDER BY e.seq DESC LIMIT 1;
END
$$
"""


def _append_only(table: str) -> None:
    """Migration 0002's protection for a new audit table: triggers, and INSERT/SELECT only for the app."""
    op.execute(
        f"CREATE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION carebridge_audit_immutable()"
    )
    op.execute(
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION carebridge_audit_immutable()"
    )
    op.execute(
        f"""
        DO $$
        BEGIN
            IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_ROLE}') THEN
                EXECUTE 'GRANT SELECT, INSERT ON {table} TO {APP_ROLE}';
                EXECUTE 'REVOKE UPDATE, DELETE, TRUNCATE ON {table} FROM {APP_ROLE}';
            END IF;
        END
        $$
        """
    )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS carebridge_audit_head(bigint)")
    op.create_table(
        "audit_event_patient",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("seq", "patient_id", name=op.f("pk_audit_event_patient")),
    )
    op.create_index(
        op.f("ix_audit_event_patient_patient_id_seq"), "audit_event_patient", ["patient_id", "seq"]
    )
    # links were kept for events with more than one patient only
    op.execute(
        "INSERT INTO audit_event_patient (seq, patient_id) "
        f"SELECT k.seq, substr(k.key, 9) FROM {TABLE} k WHERE k.patient "
        f"AND (SELECT COUNT(*) FROM {TABLE} o WHERE o.seq = k.seq AND o.patient) > 1"
    )
    op.create_index("ix_audit_event_entity", "audit_event", ["entity"])
    op.create_index("ix_audit_event_patient_id_recorded_us", "audit_event", ["patient_id", "recorded_us"])
    op.drop_index(op.f("ix_audit_event_key_key_patient_seq"), table_name=TABLE)
    op.drop_table(TABLE)
    if dialect == "postgresql":
        _append_only("audit_event_patient")
