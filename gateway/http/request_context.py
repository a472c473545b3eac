"""Per-request identity: request id, log context, metrics, and the store's RequestContext.

A pure ASGI middleware (not ``BaseHTTPMiddleware``, which costs a task and a
queue per request) assigns the request id — the caller's ``X-Request-ID`` when
it is sane, else a fresh one — echoes it in the response, binds it to the
structlog context so every log line of the request carries it, and records the
Prometheus sample.  Unhandled exceptions end here as a 500 OperationOutcome;
they are logged by type only, because database error texts can quote bound
parameters (patient data).

Who the caller is, and the :class:`~fhir_store.model.RequestContext` handed to
the store, is decided by one dependency for every channel
(:mod:`gateway.http.principal`); it reads the request id from ``REQUEST_ID_KEY``.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.http.errors import outcome
from gateway.http.health import HttpMetrics
from gateway.http.media import FHIR_JSON_UTF8
from gateway.logging_setup import get_logger

REQUEST_ID_KEY = "carebridge.request_id"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")

log = get_logger("carebridge.http")


def _incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1").strip()
            return text if _SAFE_ID.match(text) else None
    return None


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _incoming_request_id(scope) or uuid.uuid4().hex
        scope[REQUEST_ID_KEY] = request_id
        id_header = (b"x-request-id", request_id.encode("latin-1"))
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status = int(message["status"])
                started = True
                message["headers"] = [*message.get("headers", ()), id_header]
            await send(message)

        begin = time.perf_counter()
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            status = 500
            route = _route_template(scope)
            log.error("request failed", error=type(exc).__name__, route=route, method=scope["method"])
            if not started:
                body = orjson.dumps(outcome("internal server error", code="exception"))
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [
                            (b"content-type", FHIR_JSON_UTF8.encode()),
                            (b"content-length", str(len(body)).encode()),
                        ],
                    }
                )
                await send_with_id({"type": "http.response.body", "body": body})
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
            route = _route_template(scope)
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - begin)


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"
