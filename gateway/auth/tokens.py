"""Signed JWT access tokens (ES256) with rotating keys, checked against the live client table.

Why (RFC 7519 §4.1, RFC 9068 §4, SMART App Launch v2 backend services; issue #16):

* keys live in the database, sealed under the store key (``gateway.auth.state``),
  so every process verifies the same tokens and a database copy cannot sign;
* a token names its audience (``aud``: the FHIR base URL this deployment is
  configured with) and is refused by any other; ``iat``/``nbf`` in the future
  (beyond ``CAREBRIDGE_AUTH_CLOCK_SKEW_S``) are refused;
* a token records the client's credential ``generation`` and role: a client that
  was disabled, removed, re-keyed or demoted loses access in every process within
  ``CAREBRIDGE_AUTH_REFRESH_S`` seconds (RFC 7519 allows refusing before ``exp``);
* a ``patient`` token must name its patient: an unbound one would be unconfined.

Verified signatures are cached (bounded, until expiry); the client checks run on
every request against the per-process snapshot, so the hot path stays a dict lookup.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from sqlalchemy import Engine, update

from common import Unauthenticated
from fhir_store import StoreCipher, for_writing, now_us
from gateway.auth.assertions import ASSERTION_TYPE, AssertionChecker
from gateway.auth.clients import Client
from gateway.auth.schema import signing_key
from gateway.auth.scopes import Scope, parse_scopes
from gateway.auth.state import ALGORITHM, AuthState, Snapshot, bump_revision, insert_signing_key
from gateway.settings import Settings

__all__ = ["ALGORITHM", "ASSERTION_TYPE", "Principal", "TokenService", "audience_urls", "token_service"]

_WHERE = "Authorization"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    client_id: str
    role: str
    scopes: tuple[Scope, ...]
    patient_id: str | None
    expires_at: int
    generation: int = 0


def audience_urls(base_url: str, host: str, port: int) -> tuple[str, str]:
    """``(FHIR base URL, token endpoint URL)`` of this deployment, never from a request's Host header.

    ``base_url`` is the public address (``CAREBRIDGE_BASE_URL``, with or without the
    ``/fhir`` suffix); empty, the listen address stands in for it.
    """
    root = base_url.strip().rstrip("/") or f"http://{host}:{port}"
    root = root.removesuffix("/fhir")
    return f"{root}/fhir", f"{root}/auth/token"


def token_service(engine: Engine, cipher: StoreCipher, settings: Settings) -> TokenService:
    """The token service of ``settings`` (audience, token URL, refresh and skew from the settings)."""
    audience, token_url = audience_urls(settings.base_url, settings.host, settings.http.port)
    return TokenService(
        engine,
        cipher,
        audience=audience,
        token_url=settings.auth.token_url or token_url,
        refresh_s=settings.auth.refresh_s,
        clock_skew_s=settings.auth.clock_skew_s,
    )


class TokenService:
    def __init__(
        self,
        engine: Engine,
        cipher: StoreCipher,
        *,
        audience: str,
        token_url: str,
        issuer: str = "carebridge",
        lifetime_s: int = 3600,
        refresh_s: float = 2.0,
        clock_skew_s: int = 30,
    ) -> None:
        self.engine = engine
        self.cipher = cipher
        self.issuer = issuer
        self.audience = audience
        self.token_url = token_url
        self.lifetime_s = lifetime_s
        self.clock_skew_s = clock_skew_s
        self.state = AuthState(engine, cipher, lifetime_s=lifetime_s, refresh_s=refresh_s)
        self.assertions = AssertionChecker(engine, token_url, clock_skew_s=clock_skew_s)
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, Principal] = OrderedDict()

    # -- keys --------------------------------------------------------------------

    def rotate(self) -> str:
        """Retire the signing key and sign with a new one, in every process within the refresh time."""
        with for_writing(self.engine).begin() as conn:
            conn.execute(
                update(signing_key).where(signing_key.c.retired_us.is_(None)).values(retired_us=now_us())
            )
            kid = insert_signing_key(conn, self.cipher)
            bump_revision(conn)
        self.state.reload()
        return kid

    def jwks(self) -> dict[str, Any]:
        """The signing key and the retired keys whose tokens may not have expired yet."""
        keys = self.state.current().keys.keys
        return {"keys": [{**k.as_dict(private=False), "use": "sig", "alg": ALGORITHM} for k in keys]}

    # -- tokens ------------------------------------------------------------------

    def issue(self, client: Client, scopes: list[Scope]) -> dict[str, Any]:
        key = self.state.current().signing
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": client.client_id,
            "client_id": client.client_id,
            "role": client.role,
            "gen": client.generation,
            "scope": " ".join(str(s) for s in scopes),
            "iat": now,
            "nbf": now,
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
        """The token's principal, or :class:`Unauthenticated` (a 401) for any reason it may not act."""
        now = int(time.time())
        snapshot = self.state.current()
        with self._lock:
            cached = self._cache.get(token)
        principal = cached if cached is not None and cached.expires_at > now else None
        if principal is None:
            principal = self._decode(token, snapshot, now)
            with self._lock:
                self._cache[token] = principal
                if len(self._cache) > 10_000:
                    self._cache.popitem(last=False)
        if not self._client_allows(principal, snapshot):
            # a client added, enabled or changed since this process last looked: look again now
            snapshot = self.state.current(check=True)
            if not self._client_allows(principal, snapshot):
                self._refuse(principal, snapshot)
        return principal

    def _decode(self, token: str, snapshot: Snapshot, now: int) -> Principal:
        try:
            claims = jwt.decode(token, snapshot.keys, algorithms=[ALGORITHM]).claims
        except (JoseError, ValueError):
            fresh = self.state.current(check=True)  # a key rotated by another process meanwhile?
            if fresh is snapshot:
                raise Unauthenticated("invalid access token", location=_WHERE) from None
            return self._decode(token, fresh, now)
        if claims.get("iss") != self.issuer or _int(claims.get("exp")) <= now:
            raise Unauthenticated("access token expired or not issued here", location=_WHERE)
        if claims.get("aud") != self.audience:
            raise Unauthenticated("access token is not for this server (aud)", location=_WHERE)
        if (
            _int(claims.get("iat")) > now + self.clock_skew_s
            or _int(claims.get("nbf")) > now + self.clock_skew_s
        ):
            raise Unauthenticated("access token is not valid yet (iat/nbf in the future)", location=_WHERE)
        role, patient = str(claims.get("role", "")), claims.get("patient")
        if role == "patient" and not patient:
            raise Unauthenticated("a patient token must name its patient", location=_WHERE)
        return Principal(
            str(claims.get("client_id", "")),
            role,
            tuple(parse_scopes(str(claims.get("scope", "")))),
            str(patient) if patient else None,
            _int(claims.get("exp")),
            _int(claims.get("gen")),
        )

    @staticmethod
    def _client_allows(principal: Principal, snapshot: Snapshot) -> bool:
        state = snapshot.clients.get(principal.client_id)
        return (
            state is not None
            and state.active
            and state.generation == principal.generation
            and state.role == principal.role
            and (principal.role != "patient" or state.patient_id == principal.patient_id)
        )

    @staticmethod
    def _refuse(principal: Principal, snapshot: Snapshot) -> None:
        state = snapshot.clients.get(principal.client_id)
        if state is None or not state.active:
            raise Unauthenticated("the client of this token is unknown or disabled", location=_WHERE)
        raise Unauthenticated(
            "the client's credentials or role changed since this token was issued", location=_WHERE
        )

    def verify_client_assertion(self, client: Client, assertion: str, audience: str | None = None) -> None:
        """SMART Backend Services ``private_key_jwt`` (RFC 7523), single use, for the configured token URL.

        ``audience`` is ignored: the audience is the configured token URL, never one
        built from the request's Host header.
        """
        self.assertions.verify(client, assertion)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
