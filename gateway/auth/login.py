"""The client_credentials token request, from credentials to token, audited (RFC 6749 §4.4).

Why a module of its own (the route in :mod:`gateway.auth.routes` only reads the request
and writes the reply):

* **Client authentication** (RFC 6749 §2.3): ``client_secret_basic`` (HTTP Basic, the
  id and secret each form-urlencoded before base64, §2.3.1), ``client_secret_post``
  (form fields) and ``private_key_jwt`` (RFC 7523 §2.2).  A request using more than one
  method is refused (§2.3).  A failed Basic authentication is a 401 with
  ``WWW-Authenticate: Basic`` (§5.2).
* **The event loop never hashes.**  scrypt is CPU-bound for tens of milliseconds (and
  releases the GIL); it runs in a dedicated pool of ``hash_concurrency`` threads per
  process (further requests queue without holding a thread), at a lower scheduling
  priority, so ``/healthz`` and every other request keep being served while bad logins
  pour in.  Database work runs in the ordinary threadpool.
* **Throttling** (:mod:`gateway.auth.throttle`): a locked id or address gets 429 with
  ``Retry-After`` before any secret is checked; every authentication failure is counted.
* **Every outcome is audited** (ISO/IEC 27001:2022 A.8.15, Circular 46/2018/TT-BYT Art. 8):
  one AuditEvent per token request, DICOM 110114 User Authentication, naming the client id
  as submitted (``unknown`` when none was), the source address and the outcome.  Secrets
  and assertions never enter the event.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Literal, TypeVar
from urllib.parse import unquote_plus

from starlette.concurrency import run_in_threadpool

from audit import AuditHook, build_event, outcome_for_status
from common import CarebridgeError, Unauthenticated
from fhir_store import RequestContext, now_us
from gateway.auth.clients import Client, ClientRegistry
from gateway.auth.scopes import ROLE_CEILINGS, grant, grantable
from gateway.auth.throttle import Throttle
from gateway.auth.tokens import ASSERTION_TYPE, TokenService

Method = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]
T = TypeVar("T")
#: DICOM "User Authentication" (the event type of logins in IHE ATNA/BALP).
USER_AUTHENTICATION = "110114"
UNKNOWN = "unknown"
#: Longest client id an audit event names (ids are at most 100 characters when registered).
_MAX_AUDITED_ID = 100
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True)
class Credentials:
    method: Method
    client_id: str
    secret: str = ""
    assertion: str = ""


@dataclass(frozen=True)
class Reply:
    """The HTTP answer: status, RFC 6749 §5.1/§5.2 JSON body, headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


class Refused(Exception):
    """A refusal: its RFC 6749 §5.2 reply, and ``note`` for the audit event only."""

    def __init__(
        self,
        error: str,
        description: str,
        status: int,
        headers: Mapping[str, str] | None = None,
        note: str = "",
    ) -> None:
        super().__init__(f"{description}{note}")
        body = {"error": error, "error_description": description}
        self.reply = Reply(status, body, {**_NO_STORE, **(headers or {})})


_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="carebridge", charset="UTF-8"'}


def _basic(authorization: str) -> tuple[str, str]:
    scheme, _, encoded = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise Refused(
            "invalid_client", "only HTTP Basic client authentication is accepted here", 401, _BASIC_CHALLENGE
        )
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise Refused("invalid_client", "malformed HTTP Basic credentials", 401, _BASIC_CHALLENGE) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise Refused("invalid_client", "malformed HTTP Basic credentials", 401, _BASIC_CHALLENGE)
    return unquote_plus(client_id), unquote_plus(secret)


def credentials_from(authorization: str | None, form: Mapping[str, str]) -> Credentials:
    """The client's credentials, by whichever one method it used (RFC 6749 §2.3)."""
    form_id = form.get("client_id", "")
    in_form = [name for name in ("client_secret", "client_assertion") if name in form]
    if authorization:
        client_id, secret = _basic(authorization)
        if in_form:
            raise Refused("invalid_request", "use one client authentication method, not several", 400)
        if form_id and form_id != client_id:
            raise Refused("invalid_request", "client_id differs from the HTTP Basic user", 400)
        return Credentials("client_secret_basic", client_id, secret=secret)
    if len(in_form) > 1:
        raise Refused("invalid_request", "use one client authentication method, not several", 400)
    if form.get("client_assertion_type") == ASSERTION_TYPE:
        return Credentials("private_key_jwt", form_id, assertion=form.get("client_assertion", ""))
    return Credentials("client_secret_post", form_id, secret=form.get("client_secret", ""))


def claimed_client_id(authorization: str | None, form: Mapping[str, str]) -> str:
    """The client id a request names, even one refused before authentication (for its audit event)."""
    if authorization:
        with contextlib.suppress(Refused):
            return _basic(authorization)[0]
    return form.get("client_id", "")


#: Niceness added to the hashing threads (Linux schedules threads as tasks of their own).
HASH_NICENESS = 10


def _lower_priority() -> None:
    """Hashing yields the CPU to the event loop and to request threads (the flood waits, not them)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux, or not allowed: the bound holds
        thread = threading.get_native_id()
        os.setpriority(
            os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + HASH_NICENESS)
        )


class TokenLogin:
    """Issues tokens for ``POST /auth/token``; one per HTTP process (the limiter is per process)."""

    def __init__(
        self,
        clients: ClientRegistry,
        tokens: TokenService,
        throttle: Throttle,
        audit: AuditHook | None,
        *,
        hash_concurrency: int,
    ) -> None:
        self.clients = clients
        self.tokens = tokens
        self.throttle = throttle
        self.audit = audit
        self.hash_concurrency = hash_concurrency
        self._executor: ThreadPoolExecutor | None = None

    async def _hash(self, function: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                self.hash_concurrency, thread_name_prefix="secret-hash", initializer=_lower_priority
            )
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(function, *args))

    async def token(
        self, form: Mapping[str, str], authorization: str | None, address: str, request_id: str, audience: str
    ) -> Reply:
        """The reply to one token request, after its AuditEvent is written."""
        context = RequestContext(
            request_id, client_id=UNKNOWN, role=UNKNOWN, channel="rest", source_address=address
        )
        method = "none"
        claimed = claimed_client_id(authorization, form)
        if claimed:  # a request refused for its form still names the client it claimed to be
            context = replace(context, client_id=claimed[:_MAX_AUDITED_ID])
        try:
            credentials = credentials_from(authorization, form)
            method = credentials.method
            if credentials.client_id:
                context = replace(context, client_id=credentials.client_id[:_MAX_AUDITED_ID])
            if form.get("grant_type") != "client_credentials":
                raise Refused("unsupported_grant_type", "only client_credentials is supported", 400)
            client = await self._authenticate(credentials, address, audience)
            context = replace(context, role=client.role)
            reply = await run_in_threadpool(self._issue, client, form.get("scope"))
            reason = "token issued"
        except Refused as refused:
            reply, reason = refused.reply, str(refused)
        await self._record(context, reply.status, f"{method}: {reason}")
        return reply

    async def _authenticate(self, credentials: Credentials, address: str, audience: str) -> Client:
        check = await run_in_threadpool(self.throttle.check, credentials.client_id, address)
        if check.lock is not None:
            retry = str(check.lock.retry_after_s)
            description = f"too many failed client authentications; retry after {retry} s"
            note = f" ({check.lock.key.split(':', 1)[0]} locked)"
            raise Refused("temporarily_unavailable", description, 429, {"Retry-After": retry}, note)
        try:
            if credentials.method == "private_key_jwt":
                client = await run_in_threadpool(self._assertion, credentials, audience)
            else:
                client = await self._hash(
                    self.clients.authenticate_secret, credentials.client_id, credentials.secret
                )
        except Unauthenticated as exc:
            lock = await run_in_threadpool(self.throttle.failed, credentials.client_id, address)
            challenge = _BASIC_CHALLENGE if credentials.method == "client_secret_basic" else {}
            note = f" ({lock.key.split(':', 1)[0]} now locked for {lock.retry_after_s} s)" if lock else ""
            raise Refused("invalid_client", exc.message, 401, challenge, note) from None
        if check.counted:
            await run_in_threadpool(self.throttle.succeeded, credentials.client_id)
        return client

    def _assertion(self, credentials: Credentials, audience: str) -> Client:
        client = self.clients.get(credentials.client_id) if credentials.client_id else None
        if client is None:
            raise Unauthenticated("unknown client")
        self.tokens.verify_client_assertion(client, credentials.assertion, audience)
        return client

    def _issue(self, client: Client, requested: str | None) -> Reply:
        try:
            # Narrow twice: to what the client was registered with, and to its role's ceiling.
            scopes = grant(grantable(client.role, client.scopes), requested)
        except CarebridgeError as exc:
            raise Refused("invalid_scope", exc.message, 400) from None
        if not scopes and ROLE_CEILINGS.get(client.role):
            raise Refused("invalid_scope", "none of the requested scopes can be granted", 400)
        return Reply(200, self.tokens.issue(client, scopes), dict(_NO_STORE))

    async def _record(self, context: RequestContext, status: int, description: str) -> None:
        if self.audit is None:
            return
        event = build_event(
            context=context,
            event_type=USER_AUTHENTICATION,
            subtype="login",
            action="E",
            outcome=outcome_for_status(status),
            outcome_desc=f"HTTP {status}; {description}"[:300],
            recorded_us=now_us(),
        )
        await run_in_threadpool(self.audit.append, [event])
