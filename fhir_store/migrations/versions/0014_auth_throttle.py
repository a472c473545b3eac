"""auth_throttle: failed client authentications per client id and per source address

Revision ID: 0014
Revises: 0013

Why (issue #16 item 5): the token endpoint let anyone try secrets without limit.
Failures are counted per client id and per source address and lock them for a
while (OWASP ASVS 4.0 V2.2.1); the counts live in the database so that every HTTP
worker process of one deployment enforces the same limits.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_throttle",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start_us", sa.BigInteger(), nullable=False),
        sa.Column("locked_until_us", sa.BigInteger(), nullable=False),
        sa.Column("lock_level", sa.Integer(), nullable=False),
        sa.Column("last_failure_us", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_auth_throttle_last_failure", "auth_throttle", ["last_failure_us"])


def downgrade() -> None:
    op.drop_index("ix_auth_throttle_last_failure", table_name="auth_throttle")
    op.drop_table("auth_throttle")
