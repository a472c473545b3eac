"""Tables of the auth layer (registered OAuth clients, token signing keys, revocation state, login throttling).

They live on this module's own ``metadata``; ``gateway.registration`` adds it
to the registry so one Alembic history covers the whole database.

Why the extra tables (issue #16; RFC 7523 §3 item 7; ISO/IEC 27001:2022 A.5.18
access rights revoked promptly): ``auth_revision`` is one counter bumped in the
same transaction as every change to a client or a signing key, so each process
notices a change with one cheap query; ``client_assertion_jti`` remembers the
``jti`` of every accepted ``private_key_jwt`` assertion until it expires, in the
database so that every HTTP worker refuses a replay.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from fhir_store import SealedText, new_metadata

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
    # bumped when the client's credentials change: tokens carrying an older value are refused
    Column("generation", Integer, nullable=False, server_default="0"),
)

signing_key = Table(
    "signing_key",
    metadata,
    Column("kid", String(64), primary_key=True),
    Column("algorithm", String(16), nullable=False),
    # the PEM private key sealed under the store's content key (SIGNING_KEY_SEALED)
    Column("private_key", Text, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("retired_us", BigInteger, nullable=True),  # no longer signs; still published until expiry
)

auth_revision = Table(
    "auth_revision",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("revision", BigInteger, nullable=False),
)

client_assertion_jti = Table(
    "client_assertion_jti",
    metadata,
    Column("client_id", String(100), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_us", BigInteger, nullable=False),
    Index("ix_client_assertion_jti_expires_us", "expires_us"),
)

#: AES-256-GCM with the table, column and key id as associated data: a sealed key copied onto
#: another row does not open, and ``carebridge store status|rewrap`` count and move it.
SIGNING_KEY_SEALED = SealedText(signing_key, "private_key", ("kid",))

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

#: People who sign in to the console (gateway/auth/users.py; issue #19, Circular 13/2025/TT-BYT:
#: individual, verified users).  Staff names and e-mails are the organisation's, not patient data.
app_user = Table(
    "app_user",
    metadata,
    Column("username", String(64), primary_key=True),
    Column("display_name", String(200), nullable=False),
    Column("email", String(254), nullable=True),
    Column("role", String(40), nullable=False),
    Column("password_hash", String(300), nullable=False),  # Argon2id, PHC string with its parameters
    Column("must_change_password", Boolean, nullable=False),  # a one-time password was issued
    Column("totp_secret", Text, nullable=True),  # RFC 6238 shared secret, sealed (APP_USER_TOTP_SEALED)
    Column("totp_last_step", BigInteger, nullable=True),  # a code is accepted once (RFC 6238 §5.2)
    Column("active", Boolean, nullable=False),
    Column("failed_logins", Integer, nullable=False),  # in a row; reset by a successful sign-in
    Column("locked_until_us", BigInteger, nullable=False),  # 0: not locked
    Column("created_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
)

APP_USER_TOTP_SEALED = SealedText(app_user, "totp_secret", ("username",))

#: OAuth 2.0 authorization codes (RFC 6749 §4.1) bound to a PKCE challenge (RFC 7636): only the
#: code's SHA-256 is stored, each is single use and lives for a minute (gateway/auth/authorize.py).
auth_code = Table(
    "auth_code",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("client_id", String(100), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),  # S256 only
    Column("expires_us", BigInteger, nullable=False),
    Index("ix_auth_code_expires_us", "expires_us"),
)

#: Console sessions (gateway/auth/sessions.py): the cookie's SHA-256 only, so a copy of the
#: database opens no session; ``csrf_token`` is the synchronizer token of its forms.
console_session = Table(
    "console_session",
    metadata,
    Column("id_hash", String(64), primary_key=True),
    Column("username", String(64), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("last_seen_us", BigInteger, nullable=False),
    Index("ix_console_session_username", "username"),
)
