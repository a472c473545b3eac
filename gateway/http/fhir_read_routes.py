"""FHIR R4 read interactions on ``/fhir``: read, vread, search, history, $everything, metadata.

https://hl7.org/fhir/R4/http.html.  Reads are plain ``def`` endpoints (FastAPI
runs them in the threadpool, the store is synchronous) and return the stored
bytes as they are.  Writes are in :mod:`gateway.http.fhir_write_routes`.

Route order matters: literal segments (``metadata``, ``_history``, ``_search``,
``$everything``) must come before the ``{type}/{id}`` patterns they would
otherwise match; see ``_ORDER`` at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated, Any, TypeVar

import anyio
import anyio.to_thread
from fastapi import APIRouter, Path, Request
from starlette.responses import Response

from common import MethodNotAllowed, NotFound
from gateway.http import interactions as fhir
from gateway.http import openapi_docs as doc
from gateway.http.capability import capability_statement, require
from gateway.http.elements import requested_elements, subset
from gateway.http.media import negotiate, require_form
from gateway.http.responses import (
    fhir_base,
    fhir_response,
    read_form_params,
    runtime_of,
    store_of,
    version_headers,
)
from gateway.http.route_params import IdParam, RestContext, TypeParam

T = TypeVar("T")

router = APIRouter(prefix="/fhir", tags=["FHIR"])

_READ = doc.responses({200: ("The resource", doc.RESOURCE)}, (404, 410), ("ETag", "Last-Modified"))
_BUNDLE = doc.responses({200: ("Bundle", doc.BUNDLE)}, (400, 404))


@router.get(
    "/metadata",
    summary="CapabilityStatement",
    response_class=Response,
    responses=doc.responses({200: ("CapabilityStatement", doc.RESOURCE)}, ()),
    openapi_extra=doc.extra([doc.FORMAT]),
)
def metadata(request: Request) -> Response:
    negotiate(request.headers, request.query_params)
    return fhir_response(capability_statement(fhir_base(request)))


@router.get(
    "/_history",
    summary="System history",
    response_class=Response,
    responses=_BUNDLE,
    openapi_extra=doc.extra(doc.HISTORY_PARAMS),
)
def system_history(request: Request, context: RestContext) -> Response:
    negotiate(request.headers, request.query_params)
    params = request.query_params.multi_items()
    return fhir_response(
        fhir.history_bundle(store_of(request), context, fhir_base(request), None, None, params)
    )


@router.get(
    "/{type}/_history",
    summary="Type history",
    response_class=Response,
    responses=_BUNDLE,
    openapi_extra=doc.extra(doc.HISTORY_PARAMS),
)
def type_history(request: Request, resource_type: TypeParam, context: RestContext) -> Response:
    negotiate(request.headers, request.query_params)
    require(resource_type, "history-type")
    params = request.query_params.multi_items()
    body = fhir.history_bundle(store_of(request), context, fhir_base(request), resource_type, None, params)
    return fhir_response(body)


@router.post(
    "/{type}/_search",
    summary="Search (form body)",
    response_class=Response,
    responses=doc.responses({200: ("searchset Bundle", doc.BUNDLE)}, (400, 404, 405, 413, 415)),
    openapi_extra=doc.extra([doc.FORMAT], doc.FORM_BODY),
)
async def search_post(request: Request, resource_type: TypeParam, context: RestContext) -> Response:
    negotiate(request.headers, request.query_params)
    require(resource_type, "search-type")
    require_form(request.headers)
    params = await read_form_params(request)
    body = await run_search(
        request, fhir.search_bundle, store_of(request), context, fhir_base(request), resource_type, params
    )
    return fhir_response(body)


@router.get(
    "/{type}/{id}/_history/{vid}",
    summary="vread",
    response_class=Response,
    responses=_READ,
    openapi_extra=doc.extra([doc.FORMAT]),
)
def vread(
    request: Request,
    resource_type: TypeParam,
    resource_id: IdParam,
    vid: Annotated[str, Path(description="Version id")],
    context: RestContext,
) -> Response:
    negotiate(request.headers, request.query_params)
    require(resource_type, "vread")
    fhir.check_id(resource_id, resource_type)
    if not vid.isdigit() or len(vid) > 9:
        raise NotFound(f"{resource_type}/{resource_id} has no version '{vid}'", location="vid")
    stored = store_of(request).vread(resource_type, resource_id, int(vid), context)
    assert stored.content is not None
    return fhir_response(stored.content, headers=version_headers(stored))


@router.get(
    "/{type}/{id}/_history",
    summary="Instance history",
    response_class=Response,
    responses=_BUNDLE,
    openapi_extra=doc.extra(doc.HISTORY_PARAMS),
)
def instance_history(
    request: Request,
    resource_type: TypeParam,
    resource_id: IdParam,
    context: RestContext,
) -> Response:
    negotiate(request.headers, request.query_params)
    require(resource_type, "history-instance")
    fhir.check_id(resource_id, resource_type)
    params = request.query_params.multi_items()
    base = fhir_base(request)
    return fhir_response(
        fhir.history_bundle(store_of(request), context, base, resource_type, resource_id, params)
    )


@router.get(
    "/{type}/{id}/$everything",
    summary="Patient/$everything",
    response_class=Response,
    responses=doc.responses({200: ("searchset Bundle", doc.BUNDLE)}, (404, 405, 410)),
    openapi_extra=doc.extra([doc.FORMAT]),
)
def everything(
    request: Request,
    resource_type: TypeParam,
    resource_id: IdParam,
    context: RestContext,
) -> Response:
    negotiate(request.headers, request.query_params)
    require(resource_type, "read")
    if resource_type != "Patient":
        raise MethodNotAllowed(
            f"$everything is only defined on Patient, not {resource_type}", location="$everything"
        )
    fhir.check_id(resource_id, resource_type)
    return fhir_response(fhir.everything_bundle(store_of(request), context, fhir_base(request), resource_id))


@router.get(
    "/{type}/{id}",
    summary="read",
    response_class=Response,
    responses={**_READ, 304: {"description": "Not modified (If-None-Match)"}},
    openapi_extra=doc.extra([doc.FORMAT, doc.IF_NONE_MATCH]),
)
def read(
    request: Request,
    resource_type: TypeParam,
    resource_id: IdParam,
    context: RestContext,
) -> Response:
    negotiate(request.headers, request.query_params)
    require(resource_type, "read")
    fhir.check_id(resource_id, resource_type)
    stored = store_of(request).read(resource_type, resource_id, context)
    headers = version_headers(stored)
    if_none_match = request.headers.get("if-none-match")
    if if_none_match is not None and if_none_match.strip() in (stored.etag, f'"{stored.version_id}"'):
        return Response(status_code=304, headers=headers)
    assert stored.content is not None
    content = stored.content
    if "_elements" in request.query_params or "_summary" in request.query_params:
        elements = request.query_params.get("_elements")
        keep = requested_elements(
            resource_type,
            [e.strip() for e in elements.split(",") if e.strip()] if elements else None,
            request.query_params.get("_summary"),
        )
        if keep is not None:
            content = subset(content, keep)
    return fhir_response(content, headers=headers)


@router.get(
    "/{type}",
    summary="search",
    response_class=Response,
    responses=doc.responses({200: ("searchset Bundle", doc.BUNDLE)}, (400, 404, 405)),
    openapi_extra=doc.extra(doc.SEARCH_PARAMS),
)
async def search(request: Request, resource_type: TypeParam, context: RestContext) -> Response:
    negotiate(request.headers, request.query_params)
    require(resource_type, "search-type")
    params = request.query_params.multi_items()
    base = fhir_base(request)
    body = await run_search(
        request,
        fhir.search_bundle,
        store_of(request),
        context,
        base,
        resource_type,
        params,
        request.url.query,
    )
    return fhir_response(body)


async def run_search(request: Request, work: Callable[..., T], *args: Any) -> T:
    """Run a search in a worker thread, at most ``CAREBRIDGE_SEARCH_MAX_CONCURRENT`` at once.

    Why (issue #17 item 1): a search is the one request whose cost the caller chooses.
    Waiting searches queue here without holding a thread, so 40 costly searches in
    parallel cannot take every thread of the pool (``/readyz``, reads) nor most of the
    interpreter's time from the HL7 listener in the same process.
    """
    limiter = getattr(request.app.state, "search_limiter", None)
    if limiter is None:
        limiter = anyio.CapacityLimiter(runtime_of(request).settings.search.max_concurrent)
        request.app.state.search_limiter = limiter
    return await anyio.to_thread.run_sync(partial(work, *args), limiter=limiter)


# Hot routes first: Starlette tries routes in order, and read/search carry the load.  Only two
# orderings matter for correctness — ``{type}/_history`` before ``{type}/{id}`` and
# ``metadata``/``_history`` before ``{type}`` — and this list keeps both.  The write router
# is included after this one; a path both declare never has the same method in both.
_ORDER = (
    type_history,
    read,
    metadata,
    system_history,
    search,
    search_post,
    vread,
    instance_history,
    everything,
)
_RANK: dict[object, int] = {endpoint: rank for rank, endpoint in enumerate(_ORDER)}
router.routes.sort(key=lambda route: _RANK.get(getattr(route, "endpoint", None), len(_RANK)))
