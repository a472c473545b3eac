"""OAuth 2.0 authorization codes with PKCE, for people signing in (RFC 6749 §4.1, RFC 7636).

Why carebridge issues codes itself: the console signs in through the same
authorization-code flow a SMART app would use (issue #19 item 1), so people and
apps share one sign-in page, one lockout and one audit trail.  The flow is
small and fixed (public clients, PKCE ``S256`` required, exact redirect URI,
single-use codes living :data:`CODE_TTL_S`), so it is written here rather than
bent out of a framework's generic server; the token side for people is the
console session (``gateway.auth.sessions``), not a bearer token.

Only the code's SHA-256 is stored: a copy of the database redeems nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select

from common import InvalidInput, Unauthenticated
from fhir_store import for_writing, now_us
from gateway.auth.schema import auth_code

CODE_TTL_S = 60
#: The console is the one client of this flow for now: public (no secret), PKCE required.
CONSOLE_CLIENT_ID = "carebridge-console"
_VERIFIER_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def s256(verifier: str) -> str:
    """``BASE64URL(SHA256(ASCII(code_verifier)))`` without padding (RFC 7636 §4.2)."""
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode("ascii")).digest()).rstrip(b"=").decode()


def new_verifier() -> str:
    """A code verifier of 64 unreserved characters (RFC 7636 §4.1: 43-128)."""
    return secrets.token_urlsafe(48)


@dataclass(frozen=True)
class AuthorizationRequest:
    """A checked ``/auth/authorize`` request (RFC 6749 §4.1.1 + RFC 7636 §4.3)."""

    client_id: str
    redirect_uri: str
    state: str
    code_challenge: str


def check_request(
    *,
    response_type: str | None,
    client_id: str | None,
    redirect_uri: str | None,
    state: str | None,
    code_challenge: str | None,
    code_challenge_method: str | None,
    allowed_redirect: str,
) -> AuthorizationRequest:
    """Refuse anything but a code request of the console with an S256 challenge and its own redirect."""
    if response_type != "code":
        raise InvalidInput("response_type must be 'code'", location="response_type")
    if client_id != CONSOLE_CLIENT_ID:
        raise InvalidInput("unknown client_id", location="client_id")
    if redirect_uri != allowed_redirect:
        # never redirect to an address the client did not register (RFC 6749 §4.1.2.1)
        raise InvalidInput("redirect_uri is not the one registered for this client", location="redirect_uri")
    if code_challenge_method != "S256" or not code_challenge or not 43 <= len(code_challenge) <= 128:
        raise InvalidInput("a PKCE code_challenge with method S256 is required", location="code_challenge")
    if not state or len(state) > 200:
        raise InvalidInput("state is required", location="state")
    return AuthorizationRequest(client_id, redirect_uri, state, code_challenge)


def issue_code(engine: Engine, username: str, request: AuthorizationRequest) -> str:
    code = secrets.token_urlsafe(32)
    now = now_us()
    with for_writing(engine).begin() as conn:
        conn.execute(delete(auth_code).where(auth_code.c.expires_us < now))
        conn.execute(
            insert(auth_code).values(
                code_hash=_digest(code),
                username=username,
                client_id=request.client_id,
                redirect_uri=request.redirect_uri,
                code_challenge=request.code_challenge,
                expires_us=now + CODE_TTL_S * 1_000_000,
            )
        )
    return code


def redeem_code(engine: Engine, code: str, *, client_id: str, redirect_uri: str, verifier: str) -> str:
    """The username the code was issued to; the code is gone afterwards, whatever the outcome."""
    if not 43 <= len(verifier) <= 128 or not set(verifier) <= _VERIFIER_CHARS:
        raise Unauthenticated("invalid code_verifier")
    with for_writing(engine).begin() as conn:
        row = conn.execute(select(auth_code).where(auth_code.c.code_hash == _digest(code))).first()
        conn.execute(delete(auth_code).where(auth_code.c.code_hash == _digest(code)))
    if (
        row is None
        or row.expires_us < now_us()
        or row.client_id != client_id
        or row.redirect_uri != redirect_uri
        or not hmac.compare_digest(row.code_challenge, s256(verifier))
    ):
        raise Unauthenticated("invalid or expired authorization code")
    return str(row.username)
