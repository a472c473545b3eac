"""crm_consent: purposes of each outbox event, and where each CRM's feed starts

Revision ID: 0016
Revises: 0015

Why (issue #18 item 2; Law 91/2025/QH15 Art. 9): a withdrawal must take the
patient's past events under that purpose out of the feed, so each outbox row
records the purposes it was disclosed under (rows written before this
revision get them from their event type: appointment events are reminders,
completed visits and fulfilled appointments post-visit care, patient
projections every purpose, so they leave when nothing is permitted); and a CRM
registered later must not read what was written before it existed, so each
CRM's feed starts at the outbox head when its OAuth client was created.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_BY_TYPE = {
    "appointment.booked": "appointment-reminder",
    "appointment.rescheduled": "appointment-reminder",
    "appointment.cancelled": "appointment-reminder",
    "appointment.noshow": "appointment-reminder",
    "appointment.fulfilled": "post-visit-care",
    "encounter.completed": "post-visit-care",
    "patient.upserted": "appointment-reminder post-visit-care marketing",
}


def upgrade() -> None:
    with op.batch_alter_table("crm_outbox") as batch:
        batch.add_column(sa.Column("purposes", sa.String(200), nullable=False, server_default=""))
    for event_type, purposes in _BY_TYPE.items():
        op.execute(
            sa.text("UPDATE crm_outbox SET purposes = :p WHERE event_type = :t").bindparams(
                p=purposes, t=event_type
            )
        )
    op.create_table(
        "crm_feed_start",
        sa.Column("crm_id", sa.String(100), primary_key=True),
        sa.Column("start_seq", sa.BigInteger(), nullable=False),
        sa.Column("registered_us", sa.BigInteger(), nullable=False),
        sa.Column("updated_us", sa.BigInteger(), nullable=False),
    )
    op.execute(
        "INSERT INTO crm_feed_start (crm_id, start_seq, registered_us, updated_us)"
        " SELECT c.client_id, COALESCE((SELECT MAX(o.seq) FROM crm_outbox o"
        " WHERE o.created_us < c.created_us), 0), c.created_us, c.created_us"
        " FROM oauth_client c WHERE c.role = 'crm'"
    )


def downgrade() -> None:
    op.drop_table("crm_feed_start")
    with op.batch_alter_table("crm_outbox") as batch:
        batch.drop_column("purposes")
