"""store encryption: registry of the keys resource content and blind indexes are under

Revision ID: 0006
Revises: 0005

Why (issue #5, ISO/IEC 27001:2022 A.8.24): resource content, the HL7 journal
and the identifier/telecom index are sealed or blinded under keys kept outside
the database.  The database records each key's id and fingerprint (never the
key) so that a process started with a missing or different key file refuses
to run instead of serving errors or creating duplicate patients.  Existing
rows are not touched here: legacy plaintext stays readable, the first start
rebuilds the blind index, and ``carebridge store rewrap`` seals old content.
New tables inherit the ``carebridge_app`` grants through the default
privileges set in 0002.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "store_key",
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("kid", sa.String(32), nullable=False),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("registered_us", sa.BigInteger(), nullable=False),
        sa.Column("retired_us", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("purpose", "kid", name=op.f("pk_store_key")),
    )


def downgrade() -> None:
    op.drop_table("store_key")
