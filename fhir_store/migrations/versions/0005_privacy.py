"""patient rights: privacy requests, erasure tombstones, processor deletion receipts

Revision ID: 0005
Revises: 0004

Why: data-subject requests have legal deadlines (Decree 356/2025/ND-CP Art. 5)
that must survive restarts, and an erasure must leave a tombstone and the
processors' deletion receipts (Law 91/2025/QH15 Art. 14).  See
``consent/rights/schema.py``.  New tables inherit the ``carebridge_app``
grants through the default privileges set in 0002.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "privacy_request",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("filed_by", sa.String(100), nullable=False),
        sa.Column("filed_role", sa.String(40), nullable=False),
        sa.Column("verification", sa.Text(), nullable=True),
        sa.Column("processor_involved", sa.Boolean(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("ack_due_us", sa.BigInteger(), nullable=False),
        sa.Column("due_us", sa.BigInteger(), nullable=False),
        sa.Column("acknowledged_us", sa.BigInteger(), nullable=True),
        sa.Column("extended_us", sa.BigInteger(), nullable=True),
        sa.Column("extension_days", sa.Integer(), nullable=True),
        sa.Column("extension_reason", sa.Text(), nullable=True),
        sa.Column("completed_us", sa.BigInteger(), nullable=True),
        sa.Column("closed_us", sa.BigInteger(), nullable=True),
        sa.Column("close_reason", sa.Text(), nullable=True),
        sa.Column("task_id", sa.String(64), nullable=True),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.Column("open_key", sa.String(120), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_privacy_request")),
    )
    op.create_index(op.f("ix_privacy_request_patient_id"), "privacy_request", ["patient_id"])
    op.create_index(op.f("ix_privacy_request_status"), "privacy_request", ["status"])
    op.create_index("uq_privacy_request_open_key", "privacy_request", ["open_key"], unique=True)
    op.create_table(
        "privacy_tombstone",
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("subject_hash", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(12), nullable=False),
        sa.Column("erased_us", sa.BigInteger(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("legal_basis", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "subject_hash", name=op.f("pk_privacy_tombstone")),
    )
    op.create_index(op.f("ix_privacy_tombstone_subject_hash"), "privacy_tombstone", ["subject_hash"])
    op.create_table(
        "privacy_receipt",
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("crm_id", sa.String(100), nullable=False),
        sa.Column("pseudonym_hash", sa.String(64), nullable=False),
        sa.Column("notified_us", sa.BigInteger(), nullable=False),
        sa.Column("confirmed_us", sa.BigInteger(), nullable=True),
        sa.Column("note", sa.String(200), nullable=True),
        sa.PrimaryKeyConstraint("request_id", "crm_id", name=op.f("pk_privacy_receipt")),
    )
    op.create_index(
        op.f("ix_privacy_receipt_crm_id_pseudonym_hash"), "privacy_receipt", ["crm_id", "pseudonym_hash"]
    )


def downgrade() -> None:
    for table in ("privacy_receipt", "privacy_tombstone", "privacy_request"):
        op.drop_table(table)
