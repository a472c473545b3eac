"""resource_event_time: the HL7 v2 event time that last set each resource

Revision ID: 0011
Revises: 0010

Why (issue #15 item 2): messages arrive in any order, so every resource written
from HL7 remembers the event time (EVN-2, else EVN-6, else MSH-7) of the
message that last changed it, and an older message does not overwrite newer
state (``fhir_store.event_order``).  A merged Patient also remembers when it was
merged: a message from before the merge is that record's history.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "resource_event_time",
        sa.Column("res_type", sa.String(40), nullable=False),
        sa.Column("res_id", sa.String(64), nullable=False),
        sa.Column("event_us", sa.BigInteger(), nullable=True),
        sa.Column("event_source", sa.String(64), nullable=True),
        sa.Column("merged_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("res_type", "res_id", name="pk_resource_event_time"),
    )


def downgrade() -> None:
    op.drop_table("resource_event_time")
