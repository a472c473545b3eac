"""hl7_sender: registered HL7 senders (MSH-3/MSH-4, networks, TLS certificate CN)

Revision ID: 0013
Revises: 0012

Why (issue #16 item 1): a message is accepted only from a registered, enabled
sender whose connection matches its networks or certificate CN
(``gateway.sender_registry``, ``carebridge senders``).  The table belongs to
the gateway; like the auth tables (0003) its migration lives in the one history.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hl7_sender",
        sa.Column("application", sa.String(length=180), nullable=False),
        sa.Column("facility", sa.String(length=180), nullable=False),
        sa.Column("networks", sa.Text(), nullable=False),
        sa.Column("certificate_cn", sa.String(length=200), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("application", "facility", name=op.f("pk_hl7_sender")),
    )


def downgrade() -> None:
    op.drop_table("hl7_sender")
