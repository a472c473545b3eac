"""hl7_sender.charset: a registered sender's default character set

Revision ID: 0021
Revises: 0020

Why (issue #19, message browser): a HIS that sends Latin-1 or Windows-1258
without MSH-18 has every message refused under the UTF-8 default until its
charset is known.  The operator fixes that where the sender is registered
(``carebridge senders set-charset``, the console's senders page) instead of
in a setting that needs a restart; the ingest reads the registry's value
first, then ``CAREBRIDGE_HL7_SENDER_CHARSETS`` (``gateway.ingest``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hl7_sender") as batch:
        batch.add_column(sa.Column("charset", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("hl7_sender") as batch:
        batch.drop_column("charset")
