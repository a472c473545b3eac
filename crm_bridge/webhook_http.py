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
"""

from __future__ import annotations

import http.client
import ssl
from urllib.parse import urlsplit

#: Errors that mean "the kept-alive connection was already gone": retried once on a new one.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class WebhookError(Exception):
    """The POST did not get an HTTP answer (refused, timed out, TLS failure, bad URL)."""


class WebhookClient:
    """Keeps one connection per ``scheme://host:port``; not thread-safe (one dispatcher thread)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._connections: dict[tuple[str, str], http.client.HTTPConnection] = {}
        self._tls: ssl.SSLContext | None = None

    def post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """POST ``body``; the HTTP status code, or :class:`WebhookError` when there was none."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise WebhookError("unsupported webhook URL")
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        key = (parts.scheme, parts.netloc)
        reused = key in self._connections
        try:
            return self._exchange(key, parts.scheme, parts.netloc, target, body, headers)
        except _STALE as exc:
            self._drop(key)
            if not reused:
                raise WebhookError(type(exc).__name__) from exc
        except (OSError, http.client.HTTPException) as exc:  # refused, timeout, TLS, protocol
            self._drop(key)
            raise WebhookError(type(exc).__name__) from exc
        try:  # the kept-alive connection had been closed by the receiver: once more, fresh
            return self._exchange(key, parts.scheme, parts.netloc, target, body, headers)
        except (OSError, http.client.HTTPException) as exc:
            self._drop(key)
            raise WebhookError(type(exc).__name__) from exc

    def _exchange(
        self,
        key: tuple[str, str],
        scheme: str,
        netloc: str,
        target: str,
        body: bytes,
        headers: dict[str, str],
    ) -> int:
        connection = self._connections.get(key)
        if connection is None:
            connection = self._connect(scheme, netloc)
            self._connections[key] = connection
        connection.request("POST", target, body=body, headers=headers)
        response = connection.getresponse()
        response.read()  # drain, so the connection can carry the next request
        if response.will_close:
            self._drop(key)
        return response.status

    def _connect(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        if scheme == "http":
            return http.client.HTTPConnection(netloc, timeout=self.timeout_s)
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return http.client.HTTPSConnection(netloc, timeout=self.timeout_s, context=self._tls)

    def _drop(self, key: tuple[str, str]) -> None:
        connection = self._connections.pop(key, None)
        if connection is not None:
            connection.close()

    def close(self) -> None:
        for key in list(self._connections):
            self._drop(key)
