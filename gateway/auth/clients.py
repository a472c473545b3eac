"""Registered OAuth clients: secrets stored only as scrypt hashes (ISO/IEC 27001 A.8.5).

Every change (add, disable, enable, secret rotation, role change, removal) bumps
``auth_revision`` in its own transaction, so every process refuses the tokens it
invalidates within ``CAREBRIDGE_AUTH_REFRESH_S`` (``gateway.auth.state``;
ISO/IEC 27001:2022 A.5.18 access rights removed promptly).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from common import InvalidInput, NotFound, Unauthenticated, VersionConflict
from crm_bridge import register_feed
from fhir_store import for_writing, now_us
from gateway.auth.schema import oauth_client
from gateway.auth.scopes import ROLES, grantable
from gateway.auth.state import bump_revision

#: scrypt cost as log2(N), with r=8, p=1 (RFC 7914 §2: N=2^14 for interactive logins).  The
#: parameters are stored with each hash, so a hash made at any cost verifies at its own cost.
DEFAULT_SECRET_LOG2N = 14
_R, _P = 8, 1


@dataclass(frozen=True)
class Client:
    client_id: str
    role: str
    scopes: str
    jwks: str | None
    patient_id: str | None
    active: bool
    secret_hash: str | None
    generation: int = 0


def _scrypt(secret: str, salt: bytes, log2n: int, r: int, p: int) -> bytes:
    # maxmem: OpenSSL's 32 MiB default refuses N=2^15 and up with r=8.
    return hashlib.scrypt(secret.encode(), salt=salt, n=2**log2n, r=r, p=p, dklen=32, maxmem=2**30)


def hash_secret(secret: str, salt: bytes | None = None, *, log2n: int = DEFAULT_SECRET_LOG2N) -> str:
    """``scrypt$ln=<log2 N>,r=<r>,p=<p>$<salt hex>$<digest hex>`` (PHC-style parameters)."""
    salt = salt or secrets.token_bytes(16)
    digest = _scrypt(secret, salt, log2n, _R, _P)
    return f"scrypt$ln={log2n},r={_R},p={_P}${salt.hex()}${digest.hex()}"


def _parameters(text: str) -> tuple[int, int, int]:
    values = dict(part.split("=", 1) for part in text.split(","))
    return int(values["ln"]), int(values["r"]), int(values["p"])


def secret_matches(secret: str, stored: str) -> bool:
    """Whether ``secret`` hashes to ``stored``; hashes without parameters are the original N=2^14."""
    parts = stored.split("$")
    try:
        if len(parts) == 3:  # scrypt$salt$digest, written before the parameters were stored
            (log2n, r, p), salt_hex, digest_hex = (DEFAULT_SECRET_LOG2N, _R, _P), parts[1], parts[2]
        else:
            _, params, salt_hex, digest_hex = parts
            log2n, r, p = _parameters(params)
        if not (1 <= log2n <= 20 and 1 <= r <= 32 and 1 <= p <= 16):
            return False
        expected = _scrypt(secret, bytes.fromhex(salt_hex), log2n, r, p).hex()
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(expected, digest_hex)


class ClientRegistry:
    """``secret_log2n`` is the scrypt cost of secrets made from now on (``CAREBRIDGE_AUTH_SECRET_LOG2N``)."""

    def __init__(self, engine: Engine, *, secret_log2n: int = DEFAULT_SECRET_LOG2N) -> None:
        self.engine = engine
        self.secret_log2n = secret_log2n

    def add(
        self,
        client_id: str,
        role: str,
        scopes: str | None = None,
        *,
        jwks: str | None = None,
        patient_id: str | None = None,
        with_secret: bool = True,
    ) -> str | None:
        """Register a client; return its secret (shown once, never stored in clear)."""
        if role not in ROLES:
            raise InvalidInput(f"unknown role '{role}' (one of {', '.join(ROLES)})", location="role")
        if role == "patient" and not patient_id:
            raise InvalidInput("a patient client needs --patient-id", location="patient_id")
        granted = " ".join(str(s) for s in grantable(role, scopes))
        secret = secrets.token_urlsafe(32) if with_secret else None
        with for_writing(self.engine).begin() as conn:
            if conn.execute(
                select(oauth_client.c.client_id).where(oauth_client.c.client_id == client_id)
            ).first():
                raise VersionConflict(f"client '{client_id}' already exists", location="client_id")
            conn.execute(
                insert(oauth_client).values(
                    client_id=client_id,
                    secret_hash=hash_secret(secret, log2n=self.secret_log2n) if secret else None,
                    role=role,
                    scopes=granted,
                    jwks=jwks,
                    patient_id=patient_id,
                    created_us=now_us(),
                    active=True,
                    generation=0,
                )
            )
            if role == "crm":  # its change feed starts now: no backlog without an operator's grant
                register_feed(conn, client_id)
            bump_revision(conn)
        return secret

    def get(self, client_id: str) -> Client | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(oauth_client).where(oauth_client.c.client_id == client_id)).first()
        if row is None:
            return None
        return _client(row, row.secret_hash)

    def list(self) -> list[Client]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(oauth_client).order_by(oauth_client.c.client_id)).all()
        return [_client(r, None) for r in rows]

    # -- lifecycle (carebridge clients disable|enable|rotate-secret|remove|set-role) ----------

    def _change(self, client_id: str, **values: object) -> None:
        with for_writing(self.engine).begin() as conn:
            _require(conn, client_id)
            conn.execute(update(oauth_client).where(oauth_client.c.client_id == client_id).values(**values))
            bump_revision(conn)

    def set_active(self, client_id: str, active: bool) -> None:
        """Disable (its tokens are refused, no new ones issued) or enable a client."""
        self._change(client_id, active=active)

    def rotate_secret(self, client_id: str) -> str:
        """A new secret (returned once); the old one and every token issued before stop working."""
        secret = secrets.token_urlsafe(32)
        self._change(
            client_id,
            secret_hash=hash_secret(secret, log2n=self.secret_log2n),
            generation=oauth_client.c.generation + 1,
        )
        return secret

    def set_role(self, client_id: str, role: str, scopes: str | None = None) -> None:
        """Change the role (and narrow the scopes to its ceiling); tokens of the old role are refused."""
        if role not in ROLES:
            raise InvalidInput(f"unknown role '{role}' (one of {', '.join(ROLES)})", location="role")
        current = self.get(client_id)
        if current is None:
            raise NotFound(f"no client '{client_id}'", location="client_id")
        if role == "patient" and not current.patient_id:
            raise InvalidInput("a patient client needs a patient id", location="patient_id")
        granted = " ".join(str(s) for s in grantable(role, scopes if scopes is not None else current.scopes))
        self._change(client_id, role=role, scopes=granted, generation=oauth_client.c.generation + 1)

    def remove(self, client_id: str) -> None:
        """Delete the client; its tokens are refused (unknown client)."""
        with for_writing(self.engine).begin() as conn:
            _require(conn, client_id)
            conn.execute(delete(oauth_client).where(oauth_client.c.client_id == client_id))
            bump_revision(conn)

    @cached_property
    def dummy_hash(self) -> str:
        """What the secret of an unknown, disabled or secretless id is checked against.

        The same scrypt work as for a registered client, so response times do not tell which
        ids exist (OWASP Authentication Cheat Sheet, "Authentication Responses")."""
        return hash_secret(secrets.token_urlsafe(32), log2n=self.secret_log2n)

    def authenticate_secret(self, client_id: str, secret: str) -> Client:
        client = self.get(client_id) if client_id else None
        stored = client.secret_hash if client is not None and client.active else None
        if not secret_matches(secret, stored or self.dummy_hash) or client is None or not stored:
            raise Unauthenticated("invalid client credentials", location="client_id")
        return client


def _client(row: Any, secret_hash: str | None) -> Client:
    return Client(
        row.client_id,
        row.role,
        row.scopes,
        row.jwks,
        row.patient_id,
        bool(row.active),
        secret_hash,
        int(row.generation),
    )


def _require(conn: Connection, client_id: str) -> None:
    if not conn.execute(
        select(oauth_client.c.client_id).where(oauth_client.c.client_id == client_id)
    ).first():
        raise NotFound(f"no client '{client_id}'", location="client_id")
