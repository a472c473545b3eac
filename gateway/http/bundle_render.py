"""Bundles built as bytes around the stored resource JSON, never re-parsing it.

A stored version's ``content`` is already the exact JSON we serve
(``meta.versionId``/``lastUpdated`` included), so a searchset, history or
transaction-response Bundle (https://hl7.org/fhir/R4/bundle.html) is the small
envelope serialised with orjson and the stored bytes spliced in as
``entry.resource``.  This keeps search and ``$everything`` cost proportional to
the bytes sent, not to FHIR model validation.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from fhir_store import StoredResource, format_instant, now_us

# Reason phrases for entry.response.status ("201 Created"), https://hl7.org/fhir/R4/bundle-definitions.html#Bundle.entry.response.status
REASONS = {
    200: "OK",
    201: "Created",
    204: "No Content",
    304: "Not Modified",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    410: "Gone",
    412: "Precondition Failed",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
}

_HISTORY_STATUS = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}


def status_text(status: int) -> str:
    reason = REASONS.get(status)
    return f"{status} {reason}" if reason else str(status)


def _envelope(bundle_type: str, total: int | None, links: Sequence[tuple[str, str]]) -> bytes:
    head: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": format_instant(now_us())},
        "type": bundle_type,
    }
    if total is not None:
        head["total"] = total
    if links:
        head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    return orjson.dumps(head)[:-1]  # drop the closing brace: entries follow


def assemble(
    bundle_type: str,
    entries: Iterable[bytes],
    *,
    total: int | None = None,
    links: Sequence[tuple[str, str]] = (),
) -> bytes:
    """``{envelope, "entry": [entries]}``; each entry already a complete JSON object."""
    parts = list(entries)
    if not parts:
        return _envelope(bundle_type, total, links) + b"}"
    return b"".join((_envelope(bundle_type, total, links), b',"entry":[', b",".join(parts), b"]}"))


def entry(
    full_url: str | None,
    resource: bytes | None,
    *,
    search_mode: str | None = None,
    request: dict[str, Any] | None = None,
    response: dict[str, Any] | None = None,
) -> bytes:
    """One ``Bundle.entry`` with ``resource`` spliced in verbatim."""
    parts: list[bytes] = []
    if full_url is not None:
        parts.append(b'"fullUrl":' + orjson.dumps(full_url))
    if resource is not None:
        parts.append(b'"resource":' + resource)
    if search_mode is not None:
        parts.append(b'"search":{"mode":' + orjson.dumps(search_mode) + b"}")
    if request is not None:
        parts.append(b'"request":' + orjson.dumps(request))
    if response is not None:
        parts.append(b'"response":' + orjson.dumps(response))
    return b"{" + b",".join(parts) + b"}"


def search_entry(base: str, stored: StoredResource, mode: str, content: bytes | None = None) -> bytes:
    return entry(
        f"{base}/{stored.resource_type}/{stored.id}",
        stored.content if content is None else content,
        search_mode=mode,
    )


def history_entry(base: str, stored: StoredResource, method: str) -> bytes:
    """A history entry: deletions carry request.method DELETE and no resource (https://hl7.org/fhir/R4/http.html#history)."""
    url = stored.resource_type if method == "POST" else f"{stored.resource_type}/{stored.id}"
    return entry(
        f"{base}/{stored.resource_type}/{stored.id}",
        None if stored.deleted else stored.content,
        request={"method": method, "url": url},
        response={
            "status": _HISTORY_STATUS.get(method, "200 OK"),
            "etag": stored.etag,
            "lastModified": format_instant(stored.last_updated_us),
        },
    )


def response_entry(
    *,
    status: int,
    stored: StoredResource | None = None,
    resource: bytes | None = None,
    outcome: dict[str, Any] | None = None,
    base: str | None = None,
) -> bytes:
    """One transaction/batch response entry (https://hl7.org/fhir/R4/http.html#transaction-response)."""
    response: dict[str, Any] = {"status": status_text(status)}
    full_url = None
    if stored is not None:
        reference = f"{stored.resource_type}/{stored.id}"
        if base is not None:
            full_url = f"{base}/{reference}"
        if not stored.deleted or status in (200, 201):
            response["location"] = f"{reference}/_history/{stored.version_id}"
        response["etag"] = stored.etag
        response["lastModified"] = format_instant(stored.last_updated_us)
    if outcome is not None:
        response["outcome"] = outcome
    return entry(full_url, resource, response=response)
