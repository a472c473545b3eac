"""Tables of the auth layer (registered OAuth clients, token signing keys).

They live on this module's own ``metadata``; ``gateway.registration`` adds it
to the registry so one Alembic history covers the whole database.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, LargeBinary, String, Table, Text

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
