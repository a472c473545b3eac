"""The HTTP edge: input every route would mishandle is refused here, once, before any route runs.

A pure ASGI middleware (inside the request-context middleware, so refusals
carry a request id and are counted in ``carebridge_http_requests_total``):

- **NUL (U+0000)** in the path, in any query parameter (name or value), in a
  form field or anywhere in a JSON body is a 400 naming the parameter or
  element (:mod:`common.untrusted_input` says why: PostgreSQL cannot store it,
  SQLite can, so the backends would disagree).
- **JSON nesting** deeper than ``CAREBRIDGE_HTTP_MAX_JSON_DEPTH`` is a 400 at the
  element (a deeply nested extension otherwise exhausts the validator's stack).
- **Charset**: a body declared in any charset but UTF-8 (or its subset
  US-ASCII) is a 415: FHIR's JSON is UTF-8 (https://hl7.org/fhir/R4/http.html#mime-type,
  RFC 8259 §8.1), and reading Latin-1 bytes as UTF-8 would store different
  text than the client meant.  Transcoding was not chosen: no client of
  carebridge needs it, and a second decoding path is a second way to get it wrong.
- **Accept** on the CRM and privacy APIs follows the FHIR routes' rule
  (:func:`gateway.http.media.negotiate`): they produce JSON only, so
  ``Accept: application/fhir+xml`` (or ``_format=xml``) is a 406, not JSON.
- **Body size**: the body is read here, bounded by ``CAREBRIDGE_MAX_BODY_BYTES``
  for every route (a declared larger ``Content-Length`` is refused without
  reading; a longer stream is drained up to four times the limit so the client
  sees the 413), then handed to the route unchanged.

Every refusal logs one ``input refused`` line with the rule and the element's
name, never the value (it may be patient data).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

from starlette.datastructures import Headers, QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from common import (
    CarebridgeError,
    InvalidInput,
    PayloadTooLarge,
    UnsupportedMediaType,
    check_json_body,
    refuse_nul,
)
from gateway.http.errors import error_response
from gateway.http.media import FORM, negotiate
from gateway.logging_setup import get_logger

log = get_logger("carebridge.http")
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_UTF8 = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_JSON_ONLY_PREFIXES = ("/crm/", "/privacy/")
_DRAIN_FACTOR = 4
_NAME = re.compile(r"^[A-Za-z0-9_.:\[\]\-]{1,120}$")


def _loggable(location: str | None) -> str:
    """The element's name for the log, or a placeholder when it is not a plain name (a JSON key
    or parameter name chosen by the client may carry anything, patient data included)."""
    return location if location and _NAME.match(location) else "(not a plain name)"


def _params(text: str) -> list[tuple[str, str]]:
    return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="replace")


def _check_pairs(text: str, where: str) -> None:
    """Query strings and form bodies: name the parameter that holds a NUL."""
    if "%00" not in text and "\x00" not in text:
        return
    for name, value in _params(text):
        refuse_nul(name, where)
        refuse_nul(value, name)


def check_charset(content_type: str) -> None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"').lower() not in _UTF8:
            raise UnsupportedMediaType(
                f"charset '{value.strip()}' is not supported; send UTF-8", location="Content-Type"
            )


def check_request_line(scope: Scope) -> None:
    raw_path: bytes = scope.get("raw_path") or b""
    if "\x00" in str(scope.get("path", "")) or b"%00" in raw_path:
        raise InvalidInput("NUL (U+0000) is not allowed in the path", location="path")
    _check_pairs(scope.get("query_string", b"").decode("latin-1"), "query")


def check_body(content_type: str | None, body: bytes, max_depth: int) -> None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == FORM:
        try:
            _check_pairs(body.decode("utf-8"), "body")
        except UnicodeDecodeError:
            raise InvalidInput("the form body is not UTF-8", location="body") from None
    elif not media or "json" in media:
        check_json_body(body, max_depth)
    elif b"\x00" in body:
        raise InvalidInput("NUL (U+0000) is not allowed in the body", location="body")


class InputGuardMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, max_json_depth: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.max_json_depth = max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            headers = Headers(scope=scope)
            check_request_line(scope)
            path = str(scope.get("path", ""))
            if path.startswith(_JSON_ONLY_PREFIXES):
                negotiate(headers, QueryParams(scope.get("query_string", b"")))
            if scope["method"] in _BODY_METHODS:
                content_type = headers.get("content-type")
                if content_type:
                    check_charset(content_type)
                body, gone = await self._read(headers, receive)
                if gone is None:
                    check_body(content_type, body, self.max_json_depth)
                receive = _replay(body, gone, receive)
        except CarebridgeError as exc:
            log.info(
                "input refused",
                rule=type(exc).__name__,
                element=_loggable(exc.location),
                status=exc.http_status,
            )
            await error_response(exc)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _read(self, headers: Headers, receive: Receive) -> tuple[bytes, Message | None]:
        """The whole body, or what came before the client went away and its disconnect message."""
        limit = self.max_body_bytes
        too_large = PayloadTooLarge(f"request body exceeds {limit} bytes", location="body")
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit * _DRAIN_FACTOR:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: the route sees it too
                return b"".join(chunks), message
            chunk = bytes(message.get("body", b""))
            more = bool(message.get("more_body", False))
            size += len(chunk)
            if size > limit:
                chunks.clear()
                while more and size <= limit * _DRAIN_FACTOR:  # drain, within bounds
                    message = await receive()
                    size += len(message.get("body", b""))
                    more = message["type"] == "http.request" and bool(message.get("more_body", False))
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks), None


def _replay(body: bytes, gone: Message | None, receive: Receive) -> Receive:
    """The route reads the body already read here, then the connection's own messages."""
    pending: list[Message] = [{"type": "http.request", "body": body, "more_body": gone is not None}]
    if gone is not None:
        pending.append(gone)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay
