"""crm bridge: outbox, pseudonym links, disclosure state, webhooks, dead letters, HIS booking outbox

Revision ID: 0004
Revises: 0003

Why: the CRM change feed must be transactional (an event exists iff its change
committed), pseudonyms must be resolvable only through a link table kept
inside carebridge (Decree 356/2025 Art. 7 separate identifying data), and
webhook/booking deliveries need durable retry state.  See ``crm_bridge/schema.py``.
New tables inherit the ``carebridge_app`` grants through the default
privileges set in 0002.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "crm_outbox",
        sa.Column("seq", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("crm_id", sa.String(100), nullable=False),
        sa.Column("event_type", sa.String(40), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_crm_outbox")),
        sa.UniqueConstraint("event_id", name=op.f("uq_crm_outbox_event_id")),
    )
    op.create_index(op.f("ix_crm_outbox_crm_id_seq"), "crm_outbox", ["crm_id", "seq"])
    op.create_index(op.f("ix_crm_outbox_patient_id"), "crm_outbox", ["patient_id"])
    op.create_table(
        "crm_pseudonym",
        sa.Column("crm_id", sa.String(100), nullable=False),
        sa.Column("pseudonym", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("crm_id", "pseudonym", name=op.f("pk_crm_pseudonym")),
    )
    op.create_index(op.f("ix_crm_pseudonym_crm_id_patient_id"), "crm_pseudonym", ["crm_id", "patient_id"])
    op.create_table(
        "crm_disclosure",
        sa.Column("crm_id", sa.String(100), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("purposes", sa.String(200), nullable=False),
        sa.Column("projection_hash", sa.String(64), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("crm_id", "patient_id", name=op.f("pk_crm_disclosure")),
    )
    op.create_table(
        "crm_subscription",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("crm_id", sa.String(100), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("events", sa.Text(), nullable=False),
        sa.Column("secret_key_id", sa.String(16), nullable=False),
        sa.Column("secret", sa.LargeBinary(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_us", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_subscription")),
    )
    op.create_index(op.f("ix_crm_subscription_crm_id"), "crm_subscription", ["crm_id"])
    op.create_table(
        "crm_dead_letter",
        sa.Column("id", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("subscription_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_dead_letter")),
    )
    op.create_index(
        op.f("ix_crm_dead_letter_subscription_id_status"), "crm_dead_letter", ["subscription_id", "status"]
    )
    op.create_table(
        "crm_his_outbox",
        sa.Column("id", _SEQ, primary_key=True, autoincrement=True),
        sa.Column("crm_id", sa.String(100), nullable=False),
        sa.Column("idempotency_key", sa.String(100), nullable=False),
        sa.Column("appointment_id", sa.String(64), nullable=False),
        sa.Column("control_id", sa.String(40), nullable=False),
        sa.Column("message", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("status", sa.String(12), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_us", sa.BigInteger(), nullable=False),
        sa.Column("ack_code", sa.String(2), nullable=True),
        sa.Column("last_error", sa.String(200), nullable=True),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_crm_his_outbox")),
        sa.UniqueConstraint("control_id", name=op.f("uq_crm_his_outbox_control_id")),
    )
    op.create_index(
        op.f("ix_crm_his_outbox_status_next_attempt_us"), "crm_his_outbox", ["status", "next_attempt_us"]
    )
    op.create_index("uq_crm_his_outbox_idem", "crm_his_outbox", ["crm_id", "idempotency_key"], unique=True)


def downgrade() -> None:
    for table in (
        "crm_his_outbox",
        "crm_dead_letter",
        "crm_subscription",
        "crm_disclosure",
        "crm_pseudonym",
        "crm_outbox",
    ):
        op.drop_table(table)
