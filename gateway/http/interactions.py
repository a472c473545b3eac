"""The FHIR interactions behind the routes, independent of HTTP framing.

Routes (:mod:`gateway.http.fhir_read_routes`) and GET entries of batch/transaction
Bundles (:mod:`gateway.http.bundle_routes`) both call these, so a search inside
a batch answers exactly like ``GET /fhir/Patient?...``.

Paging (https://hl7.org/fhir/R4/http.html#paging): when a search has more than
one page the store freezes the ordered id list under a token; the ``next`` and
``previous`` links are the original search plus
``_page_token=<token>&_offset=<n>&_count=<c>``, so later pages are cut from the
frozen list and a concurrent insert cannot shift or duplicate entries.  History
pages by keyset: ``_page_token=<seq>`` means "versions older than seq".
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode

import orjson

from common import InvalidInput, NotFound
from fhir_store import FhirStore, RequestContext, parse_fhir_instant_range, parse_query
from gateway.http import bundle_render as render
from gateway.http.elements import requested_elements, subset

# https://hl7.org/fhir/R4/datatypes.html#id
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_PAGING = frozenset({"_page_token", "_offset", "_page", "_count"})
_HISTORY_PARAMS = frozenset({"_since", "_count", "_page_token", "_format", "_pretty"})
HISTORY_DEFAULT_COUNT = 50
HISTORY_MAX_COUNT = 1000
#: Largest history sequence number (a signed 64-bit column); a bigger ``_page_token`` is a 400,
#: not an OverflowError in the database driver.
MAX_SEQ = 2**63 - 1

Params = Sequence[tuple[str, str]]


def check_id(resource_id: str, resource_type: str) -> None:
    """An id that cannot exist is "not found" rather than a server error."""
    if not FHIR_ID.match(resource_id):
        raise NotFound(f"'{resource_id}' is not a valid {resource_type} id", location=f"{resource_type}.id")


def parse_json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise InvalidInput("the request body is empty; send a FHIR resource as JSON", location="body")
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request body is not valid JSON: {exc}", location="body") from None
    if not isinstance(parsed, dict):
        raise InvalidInput("the request body must be a JSON object (a FHIR resource)", location="body")
    return parsed


def parse_resource(body: bytes, resource_type: str) -> dict[str, Any]:
    """Parse a body and check its ``resourceType`` against the URL (https://hl7.org/fhir/R4/http.html#create)."""
    resource = parse_json(body)
    found = resource.get("resourceType")
    if found != resource_type:
        raise InvalidInput(
            f"resourceType '{found}' does not match the URL ({resource_type})",
            location=f"{resource_type}.resourceType",
        )
    return resource


def _url(base: str, path: str, params: Params) -> str:
    query = urlencode(list(params))
    return f"{base}/{path}?{query}" if query else f"{base}/{path}"


def search_bundle(
    store: FhirStore,
    context: RequestContext,
    base: str,
    resource_type: str,
    params: Params,
    query_text: str | None = None,
) -> bytes:
    """A searchset Bundle (https://hl7.org/fhir/R4/search.html) with self/next/previous links."""
    query = parse_query(resource_type, params, store.limits)
    page = store.search(query, context, query_text)
    kept = [(k, v) for k, v in params if k not in _PAGING]
    links = [("self", _url(base, resource_type, params))]
    if query.summary != "count" and query.count > 0:  # _count=0 asks for the total only: no paging
        if page.has_next:
            nxt = [*kept, ("_count", str(query.count)), ("_offset", str(page.offset + page.count))]
            if page.page_token:
                nxt.append(("_page_token", page.page_token))
            links.append(("next", _url(base, resource_type, nxt)))
        if page.offset > 0:
            prev = [*kept, ("_count", str(query.count)), ("_offset", str(max(0, page.offset - page.count)))]
            if query.page_token:
                prev.append(("_page_token", query.page_token))
            links.append(("previous", _url(base, resource_type, prev)))
    keep = requested_elements(resource_type, query.elements, query.summary)
    entries = [
        render.search_entry(
            base, m, "match", None if keep is None or m.content is None else subset(m.content, keep)
        )
        for m in page.matches
    ]
    entries += [render.search_entry(base, r, "include") for r in page.included]
    return render.assemble("searchset", entries, total=page.total, links=links)


def _history_params(params: Params) -> tuple[int | None, int, int | None]:
    since_us: int | None = None
    count = HISTORY_DEFAULT_COUNT
    before: int | None = None
    for name, value in params:
        if name not in _HISTORY_PARAMS:
            raise InvalidInput(f"'{name}' is not supported on history", location=name)
        try:
            if name == "_since":
                since_us = parse_fhir_instant_range(value, location="_since")[0]
            elif name == "_count":
                count = max(1, min(HISTORY_MAX_COUNT, int(value)))
            elif name == "_page_token":
                before = int(value)
        except ValueError:
            raise InvalidInput(f"{name} must be an integer", location=name) from None
        if before is not None and not 0 <= before <= MAX_SEQ:
            raise InvalidInput(f"_page_token must be an integer from 0 to {MAX_SEQ}", location="_page_token")
    return since_us, count, before


def history_bundle(
    store: FhirStore,
    context: RequestContext,
    base: str,
    resource_type: str | None,
    resource_id: str | None,
    params: Params,
) -> bytes:
    """A history Bundle, newest first (https://hl7.org/fhir/R4/http.html#history)."""
    since_us, count, before = _history_params(params)
    rows, more = store.history(
        resource_type, resource_id, since_us=since_us, count=count, before_seq=before, context=context
    )
    path = "/".join(p for p in (resource_type, resource_id, "_history") if p)
    links = [("self", _url(base, path, params))]
    if more and rows:
        kept = [(k, v) for k, v in params if k not in ("_count", "_page_token")]
        links.append(
            ("next", _url(base, path, [*kept, ("_count", str(count)), ("_page_token", str(rows[-1][2]))]))
        )
    entries = [render.history_entry(base, stored, method) for stored, method, _seq in rows]
    return render.assemble("history", entries, links=links)


def everything_bundle(store: FhirStore, context: RequestContext, base: str, patient_id: str) -> bytes:
    """``Patient/$everything`` (https://hl7.org/fhir/R4/patient-operation-everything.html)."""
    resources = store.everything(patient_id, context)
    entries = [render.search_entry(base, r, "match") for r in resources]
    links = [("self", f"{base}/Patient/{patient_id}/$everything")]
    return render.assemble("searchset", entries, total=len(entries), links=links)
