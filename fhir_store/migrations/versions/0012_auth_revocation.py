"""auth: sealed signing keys, client credential generation, revision counter, assertion jti

Revision ID: 0012
Revises: 0011

Why (issue #16 items 2 and 3): ``signing_key.private_pem`` held the token
signing key in clear, so a read-only copy of the database could mint tokens.
The column becomes ``private_key`` (text) and the gateway seals every clear
value under the store's content key at its next start (``gateway.auth.state``;
``carebridge store rewrap`` does the same): a migration has no access to the
key file.  ``oauth_client.generation`` lets a secret rotation invalidate the
tokens issued before it; ``auth_revision`` is the counter every process polls
to notice client and key changes; ``client_assertion_jti`` makes
``private_key_jwt`` assertions single-use (RFC 7523 §3 item 7).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("oauth_client") as batch:
        batch.add_column(sa.Column("generation", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("signing_key") as batch:
        batch.add_column(sa.Column("private_key", sa.Text(), nullable=True))
    conn = op.get_bind()
    for kid, pem in conn.execute(sa.text("SELECT kid, private_pem FROM signing_key")).all():
        conn.execute(
            sa.text("UPDATE signing_key SET private_key = :key WHERE kid = :kid"),
            {"key": bytes(pem).decode("ascii"), "kid": kid},
        )
    with op.batch_alter_table("signing_key") as batch:
        batch.alter_column("private_key", existing_type=sa.Text(), nullable=False)
        batch.drop_column("private_pem")
    op.create_table(
        "auth_revision",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("revision", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_revision")),
    )
    op.execute("INSERT INTO auth_revision (id, revision) VALUES (1, 0)")
    op.create_table(
        "client_assertion_jti",
        sa.Column("client_id", sa.String(length=100), nullable=False),
        sa.Column("jti", sa.String(length=255), nullable=False),
        sa.Column("expires_us", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name=op.f("pk_client_assertion_jti")),
    )
    op.create_index("ix_client_assertion_jti_expires_us", "client_assertion_jti", ["expires_us"])


def downgrade() -> None:
    # Sealed keys cannot be turned back into clear PEMs here (no key file): they are dropped,
    # and the gateway makes a new signing key at its next start (issued tokens stop verifying).
    op.drop_index("ix_client_assertion_jti_expires_us", table_name="client_assertion_jti")
    op.drop_table("client_assertion_jti")
    op.drop_table("auth_revision")
    op.execute("DELETE FROM signing_key")
    with op.batch_alter_table("signing_key") as batch:
        batch.drop_column("private_key")
        batch.add_column(sa.Column("private_pem", sa.LargeBinary(), nullable=False))
    with op.batch_alter_table("oauth_client") as batch:
        batch.drop_column("generation")
