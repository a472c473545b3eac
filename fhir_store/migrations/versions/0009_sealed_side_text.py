"""free-text columns of the side tables widened to Text, so they can hold sealed values

Revision ID: 0009
Revises: 0008

Why (docs/compliance.md "Side tables at rest"): ``privacy_receipt.note`` (the
CRM's deletion-receipt note) and ``crm_his_outbox.last_error`` (the HIS's
answer text) are sealed with AES-256-GCM now (``fhir_store.sealed_columns``).
A sealed value of 200 characters of Vietnamese text is about 800 characters
of base64, more than their ``VARCHAR(200)``.  Existing values stay as they are
(plaintext, still readable); ``carebridge store rewrap`` seals them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

COLUMNS = (("privacy_receipt", "note"), ("crm_his_outbox", "last_error"))


def upgrade() -> None:
    for table, column in COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, existing_type=sa.String(200), type_=sa.Text(), existing_nullable=True)


def downgrade() -> None:
    # Sealed values do not fit VARCHAR(200): clear what is longer rather than fail the downgrade.
    for table, column in COLUMNS:
        op.execute(sa.text(f"UPDATE {table} SET {column} = NULL WHERE length({column}) > 200"))
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, existing_type=sa.Text(), type_=sa.String(200), existing_nullable=True)
