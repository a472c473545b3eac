"""``POST /fhir``: batch and transaction Bundles (https://hl7.org/fhir/R4/http.html#transaction).

- transaction: every entry is translated and checked first (entry errors name
  ``Bundle.entry[i]``), then all writes go to the store in ONE
  :meth:`FhirStore.transact` call, so they commit or roll back together and
  ``urn:uuid:`` references resolve across entries.  GET entries are answered
  after the writes, as the processing rules require.
- batch: each entry succeeds or fails on its own; a failed entry carries its
  OperationOutcome in ``response.outcome`` and the others still apply.

The response Bundle has one entry per request entry, in request order, with
``response.status`` ("201 Created"), ``location``, ``etag``, ``lastModified``,
and the resource or an OperationOutcome according to ``Prefer: return``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from common import CarebridgeError, InvalidInput, NotFound, SearchSettings
from fhir_store import (
    ConditionalDelete,
    ConditionalUpdate,
    Create,
    Delete,
    FhirStore,
    Operation,
    OperationResult,
    ReadEntry,
    RequestContext,
    StoredResource,
    Update,
    entry_operation,
    parse_query,
    validate_resource,
)
from gateway.http import bundle_render as render
from gateway.http import interactions as fhir
from gateway.http import openapi_docs as doc
from gateway.http.capability import capability_statement, require
from gateway.http.errors import error_outcome, outcome
from gateway.http.media import negotiate, require_json
from gateway.http.responses import PreferReturn, fhir_base, fhir_response, prefer_return, read_body, store_of
from gateway.http.route_params import RestContext

router = APIRouter(prefix="/fhir", tags=["FHIR"])

# (status, body, stored version) of an answered GET entry.
GetAnswer = tuple[int, bytes, StoredResource | None]
GetPlan = Callable[[FhirStore, RequestContext, str], GetAnswer]


def plan_get(url: str, base: str, limits: SearchSettings) -> GetPlan:
    """Check a GET entry's URL now, answer it later (after the writes)."""
    if url.startswith(base + "/"):
        url = url[len(base) + 1 :]
    split = urlsplit(url.lstrip("/"))
    segments = [s for s in split.path.split("/") if s]
    params = parse_qsl(split.query, keep_blank_values=True)
    if segments == ["metadata"]:
        return lambda _s, _c, b: (200, capability_statement(b), None)
    if segments == ["_history"]:
        return lambda s, c, b: (200, fhir.history_bundle(s, c, b, None, None, params), None)
    if not segments:
        raise InvalidInput(f"cannot GET '{url}'", location="request.url")
    rtype = segments[0]
    if len(segments) == 1:
        require(rtype, "search-type")
        parse_query(rtype, params, limits)  # refuse bad criteria before anything is written
        return lambda s, c, b: (200, fhir.search_bundle(s, c, b, rtype, params, split.query), None)
    if segments[1:] == ["_history"]:
        require(rtype, "history-type")
        return lambda s, c, b: (200, fhir.history_bundle(s, c, b, rtype, None, params), None)
    rid = segments[1]
    fhir.check_id(rid, rtype)
    rest = segments[2:]
    if not rest:
        require(rtype, "read")

        def read(s: FhirStore, c: RequestContext, _b: str) -> GetAnswer:
            stored = s.read(rtype, rid, c)
            return 200, stored.content or b"{}", stored

        return read
    if rest == ["_history"]:
        require(rtype, "history-instance")
        return lambda s, c, b: (200, fhir.history_bundle(s, c, b, rtype, rid, params), None)
    if len(rest) == 2 and rest[0] == "_history" and rest[1].isdigit():
        require(rtype, "vread")
        vid = int(rest[1])

        def vread(s: FhirStore, c: RequestContext, _b: str) -> GetAnswer:
            stored = s.vread(rtype, rid, vid, c)
            return 200, stored.content or b"{}", stored

        return vread
    if rest == ["$everything"] and rtype == "Patient":
        require(rtype, "read")
        return lambda s, c, b: (200, fhir.everything_bundle(s, c, b, rid), None)
    raise NotFound(f"no FHIR endpoint at '{url}'", location="request.url")


def _entry_location(index: int, location: str | None, resource_type: str | None) -> str:
    where = f"Bundle.entry[{index}]"
    if not location:
        return where
    if location.startswith("Bundle."):
        return location
    if resource_type and location.startswith(resource_type + "."):
        return f"{where}.resource.{location[len(resource_type) + 1 :]}"
    return f"{where}.{location}"


def _check_operation(op: Operation) -> None:
    """Type/interaction checks and resource validation, before the store sees anything."""
    if isinstance(op, Create):
        require(str(op.resource.get("resourceType")), "create")
    elif isinstance(op, Update | ConditionalUpdate):
        require(op.resource_type, "update")
    elif isinstance(op, Delete | ConditionalDelete):
        require(op.resource_type, "delete")
    resource = getattr(op, "resource", None)
    if isinstance(resource, dict) and resource.get("resourceType") != "Parameters":
        validate_resource(resource)


def _plan_entry(entry: Any, index: int, base: str, limits: SearchSettings) -> Operation | GetPlan:
    if not isinstance(entry, dict):
        raise InvalidInput("a Bundle entry must be an object", location=f"Bundle.entry[{index}]")
    resource = entry.get("resource")
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    try:
        item = entry_operation(entry, index)
        if isinstance(item, ReadEntry):
            return plan_get(item.url, base, limits)
        _check_operation(item)
        return item
    except CarebridgeError as exc:
        exc.location = _entry_location(index, exc.location, rtype if isinstance(rtype, str) else None)
        raise


def _write_entry(result: OperationResult, prefer: PreferReturn, base: str) -> bytes:
    stored = result.stored
    resource = None
    entry_outcome = None
    if prefer == "representation" and stored is not None and not stored.deleted:
        resource = stored.content
    elif prefer == "OperationOutcome":
        entry_outcome = outcome(result.message or "done", code="informational", severity="information")
    return render.response_entry(
        status=result.status, stored=stored, resource=resource, outcome=entry_outcome, base=base
    )


def _get_entry(plan: GetPlan, store: FhirStore, context: RequestContext, base: str) -> bytes:
    try:
        status, body, stored = plan(store, context, base)
    except CarebridgeError as exc:
        return render.response_entry(status=exc.http_status, outcome=error_outcome(exc))
    return render.response_entry(status=status, stored=stored, resource=body)


def _error_entry(exc: CarebridgeError) -> bytes:
    return render.response_entry(status=exc.http_status, outcome=error_outcome(exc))


def process_transaction(
    store: FhirStore, context: RequestContext, base: str, entries: list[Any], prefer: PreferReturn
) -> bytes:
    plans = [_plan_entry(e, i, base, store.limits) for i, e in enumerate(entries)]
    ops = [p for p in plans if not callable(p)]
    results = iter(store.transact(ops, context, validate=False) if ops else [])
    out = [
        _get_entry(p, store, context, base) if callable(p) else _write_entry(next(results), prefer, base)
        for p in plans
    ]
    return render.assemble("transaction-response", out)


def process_batch(
    store: FhirStore, context: RequestContext, base: str, entries: list[Any], prefer: PreferReturn
) -> bytes:
    out: list[bytes | None] = [None] * len(entries)
    reads: list[tuple[int, GetPlan]] = []
    for index, entry in enumerate(entries):
        try:
            plan = _plan_entry(entry, index, base, store.limits)
            if callable(plan):
                reads.append((index, plan))
                continue
            result = store.transact([plan], context, validate=False)[0]
            out[index] = _write_entry(result, prefer, base)
        except CarebridgeError as exc:
            out[index] = _error_entry(exc)
    for index, plan in reads:
        out[index] = _get_entry(plan, store, context, base)
    return render.assemble("batch-response", [e for e in out if e is not None])


@router.post(
    "",
    summary="batch / transaction",
    response_class=Response,
    responses=doc.responses(
        {200: ("batch-response or transaction-response Bundle", doc.BUNDLE)},
        (400, 404, 405, 409, 412, 413, 415, 422),
    ),
    openapi_extra=doc.extra([doc.FORMAT, doc.PREFER], doc.body(doc.BUNDLE)),
)
@router.post("/", include_in_schema=False, response_class=Response)  # "[base]/" as many clients send it
async def batch_or_transaction(request: Request, context: RestContext) -> Response:
    negotiate(request.headers, request.query_params)
    require_json(request.headers)
    bundle = fhir.parse_json(await read_body(request))
    if bundle.get("resourceType") != "Bundle":
        raise InvalidInput("POST /fhir takes a batch or transaction Bundle", location="Bundle.resourceType")
    bundle_type = bundle.get("type")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidInput("Bundle.entry must be a list", location="Bundle.entry")
    if bundle_type not in ("batch", "transaction"):
        raise InvalidInput("Bundle.type must be batch or transaction", location="Bundle.type")
    process = process_transaction if bundle_type == "transaction" else process_batch
    store = store_of(request)
    body = await run_in_threadpool(
        process, store, context, fhir_base(request), entries, prefer_return(request)
    )
    return fhir_response(body)
