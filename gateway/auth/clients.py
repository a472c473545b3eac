"""Registered OAuth clients: secrets stored only as scrypt hashes (ISO/IEC 27001 A.8.5)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, insert, select

from common import InvalidInput, Unauthenticated, VersionConflict
from fhir_store import for_writing, now_us
from gateway.auth.schema import oauth_client
from gateway.auth.scopes import ROLES, grantable

_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


@dataclass(frozen=True)
class Client:
    client_id: str
    role: str
    scopes: str
    jwks: str | None
    patient_id: str | None
    active: bool
    secret_hash: str | None


def hash_secret(secret: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, dklen=32, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def secret_matches(secret: str, stored: str) -> bool:
    try:
        _, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    expected = hash_secret(secret, bytes.fromhex(salt_hex)).split("$")[2]
    return hmac.compare_digest(expected, digest_hex)


class ClientRegistry:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
                    secret_hash=hash_secret(secret) if secret else None,
                    role=role,
                    scopes=granted,
                    jwks=jwks,
                    patient_id=patient_id,
                    created_us=now_us(),
                    active=True,
                )
            )
        return secret

    def get(self, client_id: str) -> Client | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(oauth_client).where(oauth_client.c.client_id == client_id)).first()
        if row is None:
            return None
        return Client(
            row.client_id, row.role, row.scopes, row.jwks, row.patient_id, bool(row.active), row.secret_hash
        )

    def list(self) -> list[Client]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(oauth_client).order_by(oauth_client.c.client_id)).all()
        return [
            Client(r.client_id, r.role, r.scopes, r.jwks, r.patient_id, bool(r.active), None) for r in rows
        ]

    def authenticate_secret(self, client_id: str, secret: str) -> Client:
        client = self.get(client_id)
        if (
            client is None
            or not client.active
            or not client.secret_hash
            or not secret_matches(secret, client.secret_hash)
        ):
            raise Unauthenticated("invalid client credentials", location="client_id")
        return client
