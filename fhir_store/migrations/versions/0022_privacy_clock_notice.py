"""privacy_clock_notice: which privacy requests were announced as near due

Revision ID: 0022
Revises: 0021

Why (issue #19 item 3): one INFO line when a data-subject request becomes near
due (Decree 356/2025/ND-CP Art. 5 deadlines), once per request whichever process
notices first.  The table belongs to the gateway (``gateway.privacy_clocks``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0022"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "privacy_clock_notice",
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("logged_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("request_id", "state", name=op.f("pk_privacy_clock_notice")),
    )


def downgrade() -> None:
    op.drop_table("privacy_clock_notice")
