"""Tables of the auth layer (registered OAuth clients, token signing keys, login throttling).

They live on this module's own ``metadata``; ``gateway.registration`` adds it
to the registry so one Alembic history covers the whole database.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, LargeBinary, String, Table, Text

from fhir_store import new_metadata

metadata = new_metadata()

oauth_client = Table(
    "oauth_client",
    metadata,
    Column("client_id", String(100), primary_key=True),
    Column("secret_hash", String(200), nullable=True),  # scrypt; None for private_key_jwt-only clients
    Column("role", String(40), nullable=False),
    Column("scopes", Text, nullable=False),
    Column("jwks", Text, nullable=True),  # public keys for private_key_jwt (SMART backend services)
    Column("patient_id", String(64), nullable=True),  # for the patient role: whose records
    Column("created_us", BigInteger, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
)

signing_key = Table(
    "signing_key",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    Column("private_pem", LargeBinary, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("retired_us", BigInteger, nullable=True),  # no longer signs; still published until expiry
)

#: Failed client authentications at the token endpoint, per client id and per source address
#: (gateway/auth/throttle.py).  In the database so every HTTP worker sees the same counts.
auth_throttle = Table(
    "auth_throttle",
    metadata,
    Column("key", String(200), primary_key=True),  # "client:<id>" or "address:<ip>"
    Column("failures", Integer, nullable=False),  # in the window that started at window_start_us
    Column("window_start_us", BigInteger, nullable=False),
    Column("locked_until_us", BigInteger, nullable=False),  # 0: not locked
    Column("lock_level", Integer, nullable=False),  # locks so far: the next lasts lock_s * 2**level
    Column("last_failure_us", BigInteger, nullable=False),
    Index("ix_auth_throttle_last_failure", "last_failure_us"),
)
