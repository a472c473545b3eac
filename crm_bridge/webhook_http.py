"""The webhook dispatcher's HTTP client: one kept-alive ``http.client`` connection per receiver.

Why not httpx (which the tests and tools use): on this hot path a POST through
``httpx.Client`` costs several times the CPU of the standard library's
``http.client`` on the same kept-alive connection (docs/benchmarks.md,
"Design figures behind module choices").  The dispatcher runs in the same
process as MLLP ingest, under one GIL, so that CPU comes straight out of ingest.

What a webhook POST needs is small, and is all here: HTTP/1.1 keep-alive,
HTTPS with certificate and host name checks (the system trust store), a
timeout, and one retry on a fresh connection when a kept-alive one turns out
to have been closed by the receiver (the usual keep-alive race; the request
was not processed, or the retry is a duplicate the receiver de-duplicates by
``X-Carebridge-Event-Id``).  Redirects are not followed (a 3xx is a failed
delivery, as with httpx's default) and no proxy is used: receivers are
addressed directly.

Every new connection goes through :class:`~crm_bridge.webhook_policy.WebhookPolicy`:
the host is resolved once, each address is checked, and the socket is opened to
a checked address while the Host header and the TLS server name (SNI, and the
certificate check) keep the host name of the URL.  A kept-alive connection
stays on the address it was checked for; the next one is checked again (DNS
rebinding, OWASP SSRF Prevention Cheat Sheet).

Failures reach the CRM as a category (:data:`CATEGORIES`), never as a socket
message: an error text such as "connection refused" versus "timed out" for each
port is what turns a webhook into a port scanner (ASVS 4.0.3 V12.6.1).
"""

from __future__ import annotations

import http.client
import socket
import ssl
from typing import Any

from crm_bridge.webhook_policy import InvalidTarget, Target, TargetRefused, Unresolvable, WebhookPolicy

#: Errors that mean "the kept-alive connection was already gone": retried once on a new one.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)

#: What a CRM may be told about a failed delivery (``last_error`` of its subscription).
CATEGORIES = (
    "target-refused-by-policy",
    "invalid-url",
    "dns-error",
    "connection-refused",
    "connection-closed",
    "connection-error",
    "timeout",
    "tls-error",
    "protocol-error",
    "http-3xx",
    "http-4xx",
    "http-5xx",
)


def category_of(exc: BaseException) -> str:
    """The category of an exception raised while connecting or exchanging (order matters:
    ``ssl.SSLError`` and the timeouts are ``OSError`` too)."""
    if isinstance(exc, Unresolvable):
        return "dns-error"
    if isinstance(exc, InvalidTarget):
        return "invalid-url"
    if isinstance(exc, TargetRefused):
        return "target-refused-by-policy"
    if isinstance(exc, (ssl.SSLError, ssl.CertificateError)):
        return "tls-error"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timeout"
    if isinstance(exc, ConnectionRefusedError):
        return "connection-refused"
    if isinstance(exc, _STALE):
        return "connection-closed"
    if isinstance(exc, socket.gaierror):
        return "dns-error"
    if isinstance(exc, http.client.HTTPException):
        return "protocol-error"
    return "connection-error"


def status_category(status: int) -> str | None:
    """``None`` for 2xx, else ``http-3xx`` (redirects are not followed), ``http-4xx`` or ``http-5xx``."""
    if 200 <= status < 300:
        return None
    return f"http-{min(max(status // 100, 3), 5)}xx"


class WebhookError(Exception):
    """The POST did not get an HTTP answer; ``category`` is what the CRM is told.

    The message is the exception class name (for the log), never the socket's text.
    """

    def __init__(self, message: str, category: str) -> None:
        super().__init__(message)
        self.category = category


def _pinned(addresses: list[str]) -> Any:
    """A ``socket.create_connection`` replacement that ignores the host and dials checked addresses."""

    def create_connection(
        address: tuple[str, int], timeout: Any = None, source_address: Any = None
    ) -> socket.socket:
        last: OSError | None = None
        for ip in addresses:  # every one was checked; try them in the resolver's order
            try:
                return socket.create_connection((ip, address[1]), timeout, source_address)
            except OSError as exc:
                last = exc
        assert last is not None  # addresses is never empty (WebhookPolicy.resolve)
        raise last

    return create_connection


class WebhookClient:
    """Keeps one connection per ``scheme://host:port``; not thread-safe (one dispatcher thread)."""

    def __init__(self, timeout_s: float, policy: WebhookPolicy, *, tls: ssl.SSLContext | None = None) -> None:
        self.timeout_s = timeout_s
        self.policy = policy
        self._connections: dict[tuple[str, str], http.client.HTTPConnection] = {}
        self._tls = tls  # the system trust store unless given (tests bring their own CA)

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST ``body``; the HTTP status code, or :class:`WebhookError` when there was none."""
        try:
            target = self.policy.target(url)
        except TargetRefused as exc:
            raise WebhookError("unsupported webhook URL", category_of(exc)) from exc
        parts = target.parts
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (parts.scheme, parts.netloc)
        reused = key in self._connections
        try:
            return self._exchange(key, target, path, body, headers)
        except _STALE as exc:
            self._drop(key)
            if not reused:
                raise WebhookError(type(exc).__name__, category_of(exc)) from exc
        except (OSError, http.client.HTTPException, TargetRefused) as exc:  # refused, timeout, TLS
            self._drop(key)
            raise WebhookError(type(exc).__name__, category_of(exc)) from exc
        try:  # the kept-alive connection had been closed by the receiver: once more, fresh
            return self._exchange(key, target, path, body, headers)
        except (OSError, http.client.HTTPException, TargetRefused) as exc:
            self._drop(key)
            raise WebhookError(type(exc).__name__, category_of(exc)) from exc

    def _exchange(
        self, key: tuple[str, str], target: Target, path: str, body: bytes, headers: dict[str, str]
    ) -> int:
        connection = self._connections.get(key)
        if connection is None:
            connection = self._connect(target)
            self._connections[key] = connection
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read()  # drain, so the connection can carry the next request
        if response.will_close:
            self._drop(key)
        return response.status

    def _connect(self, target: Target) -> http.client.HTTPConnection:
        """A connection whose socket goes to the addresses checked now (the policy resolves once)."""
        addresses = self.policy.resolve(target)
        connection: http.client.HTTPConnection
        if target.scheme == "http":
            connection = http.client.HTTPConnection(target.host, target.port, timeout=self.timeout_s)
        else:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            connection = http.client.HTTPSConnection(
                target.host, target.port, timeout=self.timeout_s, context=self._tls
            )
        # http.client dials through this attribute; Host header and SNI still use target.host
        connection._create_connection = _pinned(addresses)  # type: ignore[attr-defined]
        return connection

    def _drop(self, key: tuple[str, str]) -> None:
        connection = self._connections.pop(key, None)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        for key in list(self._connections):
            self._drop(key)
