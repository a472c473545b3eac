"""HTTP framing shared by the FHIR routes: base URL, bounded bodies and forms, Prefer, resource headers.

- Base URL: ``settings.base_url`` when configured (behind a proxy), never the
  Host header.  Without it, the address the client used, so ``fullUrl``/``Location``
  resolve for that client, but only when its host name is in
  ``settings.http.allowed_hosts`` (loopback names by default); any other Host is
  a 400.  A reflected Host header would let whoever controls it (a spoofed
  header, DNS rebinding, a poisoned cache) choose where paging links, with
  their ``_page_token``, and ``Location`` send the next request (OWASP
  WSTG-INPV-17, Host header injection).
- Bodies are read as a stream and refused with 413 once they pass
  ``settings.max_body_bytes``, before anything is parsed or stored; a declared
  ``Content-Length`` over the limit is refused without reading at all.
- ``Prefer: return=`` (https://hl7.org/fhir/R4/http.html#ops) picks between the
  stored representation, an empty body and an OperationOutcome.
- ``ETag``/``Last-Modified``/``Location`` per https://hl7.org/fhir/R4/http.html#read
  and #create, from the stored version, never from re-parsing the body.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from common import InvalidInput, PayloadTooLarge
from fhir_store import FhirStore, StoredResource, http_date
from gateway.http.errors import outcome
from gateway.http.media import FHIR_JSON_UTF8
from gateway.runtime import Runtime

PreferReturn = Literal["minimal", "representation", "OperationOutcome"]
#: A Host header (RFC 9110 §7.2): a name or IPv4 address, or a bracketed IPv6 address, then a port.
_HOST = re.compile(r"(?:([A-Za-z0-9.\-]+)|\[([0-9A-Fa-f:.]+)\])(?::[0-9]{1,5})?")
# Keep reading (and discarding) an oversized body up to this many times the
# limit so the client sees the 413 instead of a reset connection.
_DRAIN_FACTOR = 4


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def store_of(request: Request) -> FhirStore:
    return runtime_of(request).store


def fhir_base(request: Request) -> str:
    """The base of every link and ``fullUrl`` (module docstring)."""
    settings = runtime_of(request).settings
    if settings.base_url:
        return settings.base_url.rstrip("/")
    allowed = {h.strip().lower().strip("[]") for h in settings.http.allowed_hosts.split(",") if h.strip()}
    header = request.headers.get("host")
    if header is None:  # HTTP/1.0 without Host: Starlette uses the listening address
        server = request.scope.get("server")
        host = str(server[0]) if server else ""
    else:
        match = _HOST.fullmatch(header)
        host = (match.group(1) or match.group(2)).lower() if match else ""
    if host not in allowed:
        raise InvalidInput(
            "this Host is not one carebridge may put into links; "
            "configure CAREBRIDGE_BASE_URL or CAREBRIDGE_HTTP_ALLOWED_HOSTS",
            location="Host",
        )
    return f"{str(request.base_url).rstrip('/')}/fhir"


def require_link_host(request: Request) -> None:
    """Dependency of the write routes: refuse a Host :func:`fhir_base` would refuse *before* the write.

    Otherwise the resource would be stored and only its ``Location`` refused.
    """
    fhir_base(request)


async def read_body(request: Request) -> bytes:
    limit = runtime_of(request).settings.max_body_bytes
    drain_limit = limit * _DRAIN_FACTOR
    too_large = PayloadTooLarge(f"request body exceeds {limit} bytes", location="body")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > drain_limit:
        raise too_large
    stream = request.stream()
    chunks: list[bytes] = []
    size = 0
    async for chunk in stream:
        size += len(chunk)
        if size > limit:
            chunks.clear()
            async for more in stream:  # drain the rest of the same stream, within bounds
                size += len(more)
                if size > drain_limit:
                    break
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def read_form_params(request: Request) -> list[tuple[str, str]]:
    """Query parameters plus a bounded ``x-www-form-urlencoded`` body: ``POST .../_search`` criteria.

    FHIR lets a client move search criteria into the body (so they stay out of
    URLs and access logs); both halves count, as if sent in the query.
    """
    raw = await read_body(request)
    try:
        form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise InvalidInput("the form body is not UTF-8", location="body") from None
    return [*request.query_params.multi_items(), *form]


def prefer_return(request: Request, default: PreferReturn = "representation") -> PreferReturn:
    header = request.headers.get("prefer")
    if not header:
        return default
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name.strip().lower() == "return":
            value = value.strip().strip('"')
            if value == "minimal":
                return "minimal"
            if value == "representation":
                return "representation"
            if value == "OperationOutcome":
                return "OperationOutcome"
    return default


def version_headers(stored: StoredResource) -> dict[str, str]:
    return {"ETag": stored.etag, "Last-Modified": http_date(stored.last_updated_us)}


def fhir_response(content: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(content, status_code=status, media_type=FHIR_JSON_UTF8, headers=headers)


def write_response(
    request: Request, stored: StoredResource, status: int, message: str, *, location: bool = True
) -> Response:
    """Answer a create/update with the stored version, shaped by ``Prefer: return``."""
    headers = version_headers(stored)
    if location:
        headers["Location"] = (
            f"{fhir_base(request)}/{stored.resource_type}/{stored.id}/_history/{stored.version_id}"
        )
    wanted = prefer_return(request)
    if wanted == "minimal" or stored.content is None:
        return Response(status_code=status, headers=headers)
    if wanted == "OperationOutcome":
        body = orjson.dumps(outcome(message, code="informational", severity="information"))
        return fhir_response(body, status, headers)
    return fhir_response(stored.content, status, headers)
