"""hl7_journal: content digest and reused-control-id flag; unique on sender + MSH-10 + digest

Revision ID: 0010
Revises: 0009

Why (issue #15 item 1): senders reuse MSH-10 (counters reset on restart, fixed
values), so a sender + control id is not a message identity.  A duplicate
delivery is the same sender, the same MSH-10 *and* the same content (a keyed
digest of the message without MSH-7, ``fhir_store.journal``); the same key with
other content is journaled as a row of its own, flagged ``control_id_reused``.
Rows journaled before this revision get an empty digest and keep answering a
retry of their key as before (``fhir_store.journal.find_duplicate``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hl7_journal") as batch:
        batch.add_column(sa.Column("digest", sa.String(64), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("control_id_reused", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.drop_index("uq_hl7_journal_sender_control")
        batch.create_index(
            "uq_hl7_journal_sender_control_digest",
            ["sending_application", "sending_facility", "control_id", "digest"],
            unique=True,
        )


def downgrade() -> None:
    # The old key cannot hold two rows of one sender + MSH-10, and a row cannot be renamed
    # (its raw bytes are sealed bound to the control id): refuse rather than drop messages.
    reused = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT count(*) FROM (SELECT 1 FROM hl7_journal"
                " GROUP BY sending_application, sending_facility, control_id HAVING count(*) > 1) AS r"
            )
        )
        .scalar()
    )
    if reused:
        raise RuntimeError(f"{reused} control ids were journaled more than once: cannot downgrade")
    with op.batch_alter_table("hl7_journal") as batch:
        batch.drop_index("uq_hl7_journal_sender_control_digest")
        batch.create_index(
            "uq_hl7_journal_sender_control",
            ["sending_application", "sending_facility", "control_id"],
            unique=True,
        )
        batch.drop_column("control_id_reused")
        batch.drop_column("digest")
