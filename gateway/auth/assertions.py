"""``private_key_jwt`` client assertions (RFC 7523 §3, SMART Backend Services): signed, fresh, single use.

Why (issue #16 item 3): an assertion captured once (a proxy log, a debugging
session) must not buy a second token, so its ``jti`` is remembered until the
assertion expires — in the database, because a replay may reach another HTTP
worker (RFC 7523 §3 item 7 lets the server refuse a reused ``jti``).  Its
audience must be this server's configured token URL (RFC 7523 §3 item 3), never
one rebuilt from the request's Host header, which the client controls.
"""

from __future__ import annotations

import json
import time

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError

from common import Unauthenticated
from fhir_store import for_writing, now_us
from gateway.auth.clients import Client
from gateway.auth.schema import client_assertion_jti

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_LIFETIME_S = 300  # SMART Backend Services: exp no more than five minutes ahead
_WHERE = "client_assertion"


class AssertionChecker:
    def __init__(self, engine: Engine, token_url: str, *, clock_skew_s: int) -> None:
        self.engine = engine
        self.token_url = token_url
        self.clock_skew_s = clock_skew_s

    def verify(self, client: Client, assertion: str) -> None:
        """Raise :class:`Unauthenticated` unless ``assertion`` authenticates ``client`` (once)."""
        if not client.active:
            raise Unauthenticated("client is disabled", location=_WHERE)
        if not client.jwks:
            raise Unauthenticated("client has no registered public key", location=_WHERE)
        try:
            claims = jwt.decode(assertion, KeySet.import_key_set(json.loads(client.jwks))).claims
        except (JoseError, ValueError):
            raise Unauthenticated("client assertion signature is invalid", location=_WHERE) from None
        now = int(time.time())
        if claims.get("iss") != client.client_id or claims.get("sub") != client.client_id:
            raise Unauthenticated("client assertion iss/sub must be the client id", location=_WHERE)
        expires = _int(claims.get("exp"))
        if expires <= now or expires > now + MAX_LIFETIME_S:
            raise Unauthenticated("client assertion expired or too long-lived", location=_WHERE)
        for name in ("iat", "nbf"):
            if _int(claims.get(name)) > now + self.clock_skew_s:
                raise Unauthenticated(f"client assertion {name} is in the future", location=_WHERE)
        aud = claims.get("aud")
        if self.token_url not in (aud if isinstance(aud, list) else [aud]):
            raise Unauthenticated("client assertion audience is not this token endpoint", location=_WHERE)
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > 255:
            raise Unauthenticated("client assertion needs a jti", location=_WHERE)
        self._remember(client.client_id, jti, expires)

    def _remember(self, client_id: str, jti: str, expires: int) -> None:
        """Record ``jti`` until the assertion expires; a second use is refused, in any process."""
        table = client_assertion_jti
        try:
            with for_writing(self.engine).begin() as conn:
                conn.execute(delete(table).where(table.c.expires_us < now_us()))
                conn.execute(
                    insert(table).values(client_id=client_id, jti=jti, expires_us=expires * 1_000_000)
                )
        except IntegrityError:
            raise Unauthenticated("client assertion was already used (jti)", location=_WHERE) from None


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload, no-any-return]
    except (TypeError, ValueError):
        return 0
