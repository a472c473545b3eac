"""Signed JWT access tokens (ES256) with rotating keys, and client-assertion checks.

Keys live in the database so every process verifies the same tokens; a
rotation creates a new signing key and keeps the old public key in the JWKS
until every token it signed has expired.  Verified tokens are cached (bounded,
until expiry) so the per-request cost on the hot read path stays small.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import Engine, insert, select, update

from common import Unauthenticated
from fhir_store import for_writing, now_us
from gateway.auth.clients import Client
from gateway.auth.schema import signing_key
from gateway.auth.scopes import Scope, parse_scopes

ALGORITHM = "ES256"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    client_id: str
    role: str
    scopes: tuple[Scope, ...]
    patient_id: str | None
    expires_at: int


class TokenService:
    def __init__(self, engine: Engine, *, issuer: str = "carebridge", lifetime_s: int = 3600) -> None:
        self.engine = engine
        self.issuer = issuer
        self.lifetime_s = lifetime_s
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Principal] = OrderedDict()
        self._keys: KeySet | None = None
        self._signing: ECKey | None = None

    # -- keys --------------------------------------------------------------------

    def _load_keys(self) -> None:
        with for_writing(self.engine).begin() as conn:
            rows = conn.execute(select(signing_key).order_by(signing_key.c.created_us)).all()
            if not any(r.retired_us is None for r in rows):
                self._insert_key(conn)
                rows = conn.execute(select(signing_key).order_by(signing_key.c.created_us)).all()
        cutoff = now_us() - self.lifetime_s * 1_000_000
        keys: list[Any] = [
            ECKey.import_key(r.private_pem, {"kid": r.kid})
            for r in rows
            if not r.retired_us or r.retired_us > cutoff
        ]
        active = [r for r in rows if r.retired_us is None][-1]
        self._signing = ECKey.import_key(active.private_pem, {"kid": active.kid})
        self._keys = KeySet(keys)

    @staticmethod
    def _insert_key(conn: Any) -> None:
        kid = uuid.uuid4().hex[:16]
        key = ECKey.generate_key("P-256", parameters={"kid": kid})
        conn.execute(
            insert(signing_key).values(
                kid=kid, algorithm=ALGORITHM, private_pem=key.as_pem(private=True), created_us=now_us()
            )
        )

    def rotate(self) -> None:
        """Retire the current signing key and start signing with a new one."""
        with for_writing(self.engine).begin() as conn:
            conn.execute(
                update(signing_key).where(signing_key.c.retired_us.is_(None)).values(retired_us=now_us())
            )
            self._insert_key(conn)
        with self._lock:
            self._keys = None

    def _keyset(self) -> tuple[KeySet, ECKey]:
        with self._lock:
            if self._keys is None or self._signing is None:
                self._load_keys()
            assert self._keys is not None and self._signing is not None
            return self._keys, self._signing

    def jwks(self) -> dict[str, Any]:
        keys, _ = self._keyset()
        return {"keys": [{**k.as_dict(private=False), "use": "sig", "alg": ALGORITHM} for k in keys.keys]}

    # -- tokens ------------------------------------------------------------------

    def issue(self, client: Client, scopes: list[Scope]) -> dict[str, Any]:
        _, key = self._keyset()
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": client.client_id,
            "client_id": client.client_id,
            "role": client.role,
            "scope": " ".join(str(s) for s in scopes),
            "iat": now,
            "exp": now + self.lifetime_s,
            "jti": secrets.token_urlsafe(12),
        }
        if client.patient_id:
            claims["patient"] = client.patient_id
        token = jwt.encode({"alg": ALGORITHM, "kid": key.kid}, claims, key)
        response: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": self.lifetime_s,
            "scope": claims["scope"],
        }
        if client.patient_id:
            response["patient"] = client.patient_id
        return response

    def verify(self, token: str) -> Principal:
        now = int(time.time())
        with self._lock:
            cached = self._cache.get(token)
        if cached is not None and cached.expires_at > now:
            return cached
        keys, _ = self._keyset()
        try:
            decoded = jwt.decode(token, keys, algorithms=[ALGORITHM])
        except (JoseError, ValueError) as exc:
            if "kid" in str(exc).lower():
                with self._lock:
                    self._keys = None  # a key rotated in another process: reload once
            raise Unauthenticated("invalid access token", location="Authorization") from None
        claims = decoded.claims
        if claims.get("iss") != self.issuer or int(claims.get("exp", 0)) <= now:
            raise Unauthenticated("access token expired or not issued here", location="Authorization")
        principal = Principal(
            str(claims["client_id"]),
            str(claims["role"]),
            tuple(parse_scopes(str(claims.get("scope", "")))),
            claims.get("patient"),
            int(claims["exp"]),
        )
        with self._lock:
            self._cache[token] = principal
            if len(self._cache) > 10_000:
                self._cache.popitem(last=False)
        return principal

    def verify_client_assertion(self, client: Client, assertion: str, audience: str) -> None:
        """SMART Backend Services ``private_key_jwt`` (RFC 7523) against the client's registered JWKS."""
        if not client.jwks:
            raise Unauthenticated("client has no registered public key", location="client_assertion")
        try:
            decoded = jwt.decode(assertion, KeySet.import_key_set(json.loads(client.jwks)))
        except (JoseError, ValueError):
            raise Unauthenticated(
                "client assertion signature is invalid", location="client_assertion"
            ) from None
        claims = decoded.claims
        now = int(time.time())
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            raise Unauthenticated(
                "client assertion iss/sub must be the client id", location="client_assertion"
            )
        if int(claims.get("exp", 0)) <= now or int(claims.get("exp", 0)) > now + 300:
            raise Unauthenticated("client assertion expired or too long-lived", location="client_assertion")
        aud = claims.get("aud")
        if audience not in (aud if isinstance(aud, list) else [aud]):
            raise Unauthenticated(
                "client assertion audience is not this token endpoint", location="client_assertion"
            )
