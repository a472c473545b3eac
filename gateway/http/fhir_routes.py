"""FHIR R4 RESTful interactions on ``/fhir`` (https://hl7.org/fhir/R4/http.html).

Route order matters: literal segments (``metadata``, ``_history``, ``_search``,
``$everything``) are declared before the ``{type}/{id}`` patterns they would
otherwise match.  Reads are plain ``def`` endpoints (FastAPI runs them in the
threadpool, the store is synchronous) and return the stored bytes as they are;
writes are ``async`` because they stream and bound the body first, then hand
the store call to the threadpool.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from common.errors import InvalidInput, MethodNotAllowed, NotFound
from fhir_store.model import (
    ConditionalDelete,
    ConditionalUpdate,
    Create,
    Delete,
    Operation,
    OperationResult,
    RequestContext,
    Update,
)
from gateway.http import interactions as fhir
from gateway.http import openapi_docs as doc
from gateway.http.capability import capability_statement, require
from gateway.http.elements import requested_elements, subset
from gateway.http.errors import outcome
from gateway.http.media import negotiate, require_form, require_json
from gateway.http.request_context import rest_context
from gateway.http.responses import (
    fhir_base,
    fhir_response,
    prefer_return,
    read_body,
    store_of,
    version_headers,
    write_response,
)

router = APIRouter(prefix="/fhir", tags=["FHIR"])

TypeParam = Annotated[str, Path(alias="type", description="FHIR resource type")]
IdParam = Annotated[str, Path(alias="id", description="Logical id")]
Context = Annotated[RequestContext, Depends(rest_context)]

_READ = doc.responses({200: ("The resource", doc.RESOURCE)}, (404, 410), ("ETag", "Last-Modified"))
_BUNDLE = doc.responses({200: ("Bundle", doc.BUNDLE)}, (400, 404))
_WRITE_ERRORS = (400, 404, 405, 409, 412, 413, 415, 422)


def _negotiate(request: Request) -> None:
    negotiate(request.headers, request.query_params)


def _transact(request: Request, op: Operation, context: RequestContext) -> OperationResult:
    return store_of(request).transact([op], context)[0]


@router.get(
    "/metadata",
    summary="CapabilityStatement",
    response_class=Response,
    responses=doc.responses({200: ("CapabilityStatement", doc.RESOURCE)}, ()),
    openapi_extra=doc.extra([doc.FORMAT]),
)
def metadata(request: Request) -> Response:
    _negotiate(request)
    return fhir_response(capability_statement(fhir_base(request)))


@router.get(
    "/_history",
    summary="System history",
    response_class=Response,
    responses=_BUNDLE,
    openapi_extra=doc.extra(doc.HISTORY_PARAMS),
)
def system_history(request: Request, context: Context) -> Response:
    _negotiate(request)
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
def type_history(request: Request, resource_type: TypeParam, context: Context) -> Response:
    _negotiate(request)
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
async def search_post(request: Request, resource_type: TypeParam, context: Context) -> Response:
    _negotiate(request)
    require(resource_type, "search-type")
    require_form(request.headers)
    raw = await read_body(request)
    try:
        form = parse_qsl(raw.decode("utf-8"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise InvalidInput("the form body is not UTF-8", location="body") from None
    params = [*request.query_params.multi_items(), *form]
    body = await run_in_threadpool(
        fhir.search_bundle, store_of(request), context, fhir_base(request), resource_type, params
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
    context: Context,
) -> Response:
    _negotiate(request)
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
    context: Context,
) -> Response:
    _negotiate(request)
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
    context: Context,
) -> Response:
    _negotiate(request)
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
    context: Context,
) -> Response:
    _negotiate(request)
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


@router.put(
    "/{type}/{id}",
    summary="update (If-Match for optimistic locking)",
    response_class=Response,
    responses=doc.responses(
        {200: ("Updated", doc.RESOURCE), 201: ("Created", doc.RESOURCE)}, _WRITE_ERRORS, ("ETag", "Location")
    ),
    openapi_extra=doc.extra([doc.FORMAT, doc.IF_MATCH, doc.PREFER], doc.body()),
)
async def update(
    request: Request,
    resource_type: TypeParam,
    resource_id: IdParam,
    context: Context,
) -> Response:
    _negotiate(request)
    require(resource_type, "update")
    require_json(request.headers)
    if not fhir.FHIR_ID.match(resource_id):
        raise InvalidInput(f"'{resource_id}' is not a valid id", location=f"{resource_type}.id")
    resource = fhir.parse_resource(await read_body(request), resource_type)
    if resource.get("id") != resource_id:
        raise InvalidInput(
            "the resource id must be present and match the URL id", location=f"{resource_type}.id"
        )
    op = Update(resource_type, resource_id, resource, if_match=request.headers.get("if-match"))
    result = await run_in_threadpool(_transact, request, op, context)
    assert result.stored is not None
    return write_response(request, result.stored, result.status, f"{result.stored.reference} updated")


@router.delete(
    "/{type}/{id}",
    summary="delete",
    response_class=Response,
    responses=doc.responses(
        {200: ("Deleted (OperationOutcome)", doc.OUTCOME), 204: ("Deleted", None)}, (400, 404, 405, 409)
    ),
    openapi_extra=doc.extra([doc.FORMAT, doc.PREFER]),
)
def delete(
    request: Request,
    resource_type: TypeParam,
    resource_id: IdParam,
    context: Context,
) -> Response:
    _negotiate(request)
    require(resource_type, "delete")
    fhir.check_id(resource_id, resource_type)
    result = _transact(request, Delete(resource_type, resource_id), context)
    return _delete_response(request, result, f"{resource_type}/{resource_id}")


def _delete_response(request: Request, result: OperationResult, what: str) -> Response:
    """204, or 200 with an OperationOutcome when asked for one (https://hl7.org/fhir/R4/http.html#delete)."""
    headers = {"ETag": result.stored.etag} if result.stored is not None and result.stored.deleted else None
    if prefer_return(request, "minimal") == "OperationOutcome":
        message = f"{what} deleted" if result.status == 200 else f"nothing to delete at {what}"
        body = orjson.dumps(outcome(message, code="informational", severity="information"))
        return fhir_response(body, 200, headers)
    return Response(status_code=204, headers=headers)


@router.get(
    "/{type}",
    summary="search",
    response_class=Response,
    responses=doc.responses({200: ("searchset Bundle", doc.BUNDLE)}, (400, 404, 405)),
    openapi_extra=doc.extra(doc.SEARCH_PARAMS),
)
def search(request: Request, resource_type: TypeParam, context: Context) -> Response:
    _negotiate(request)
    require(resource_type, "search-type")
    params = request.query_params.multi_items()
    base = fhir_base(request)
    body = fhir.search_bundle(store_of(request), context, base, resource_type, params, request.url.query)
    return fhir_response(body)


@router.post(
    "/{type}",
    summary="create (If-None-Exist for conditional create)",
    response_class=Response,
    status_code=201,
    responses=doc.responses(
        {201: ("Created", doc.RESOURCE), 200: ("Already exists (conditional create)", doc.RESOURCE)},
        _WRITE_ERRORS,
        ("ETag", "Location", "Last-Modified"),
    ),
    openapi_extra=doc.extra([doc.FORMAT, doc.IF_NONE_EXIST, doc.PREFER], doc.body()),
)
async def create(request: Request, resource_type: TypeParam, context: Context) -> Response:
    _negotiate(request)
    require(resource_type, "create")
    require_json(request.headers)
    resource = fhir.parse_resource(await read_body(request), resource_type)
    criteria = request.headers.get("if-none-exist")
    if criteria is not None:
        criteria = criteria.partition("?")[2] if "?" in criteria else criteria
        if not criteria.strip():
            raise InvalidInput("If-None-Exist needs search criteria", location="If-None-Exist")
    result = await run_in_threadpool(_transact, request, Create(resource, if_none_exist=criteria), context)
    assert result.stored is not None
    message = f"{result.stored.reference} " + ("created" if result.status == 201 else "already exists")
    return write_response(request, result.stored, result.status, message)


def _criteria(request: Request) -> str:
    criteria = "&".join(
        part for part in request.url.query.split("&") if part and not part.startswith("_format=")
    )
    if not criteria:
        raise InvalidInput("a conditional operation needs search criteria in the URL", location="url")
    return criteria


@router.put(
    "/{type}",
    summary="conditional update (?identifier=system|value)",
    response_class=Response,
    responses=doc.responses(
        {200: ("Updated", doc.RESOURCE), 201: ("Created", doc.RESOURCE)}, _WRITE_ERRORS, ("ETag", "Location")
    ),
    openapi_extra=doc.extra([*doc.CRITERIA, doc.PREFER], doc.body()),
)
async def conditional_update(request: Request, resource_type: TypeParam, context: Context) -> Response:
    _negotiate(request)
    require(resource_type, "update")
    require_json(request.headers)
    criteria = _criteria(request)
    resource = fhir.parse_resource(await read_body(request), resource_type)
    op = ConditionalUpdate(resource_type, criteria, resource)
    result = await run_in_threadpool(_transact, request, op, context)
    assert result.stored is not None
    return write_response(request, result.stored, result.status, f"{result.stored.reference} written")


@router.delete(
    "/{type}",
    summary="conditional delete (?criteria)",
    response_class=Response,
    responses=doc.responses(
        {200: ("Deleted (OperationOutcome)", doc.OUTCOME), 204: ("Deleted", None)}, (400, 404, 405, 412)
    ),
    openapi_extra=doc.extra([*doc.CRITERIA, doc.PREFER]),
)
def conditional_delete(request: Request, resource_type: TypeParam, context: Context) -> Response:
    _negotiate(request)
    require(resource_type, "delete")
    result = _transact(request, ConditionalDelete(resource_type, _criteria(request)), context)
    return _delete_response(request, result, f"{resource_type}?{_criteria(request)}")


# Hot routes first: Starlette tries routes in order, and read/search/create carry
# the load.  Only two orderings matter for correctness — ``{type}/_history``
# before ``{type}/{id}`` and ``metadata``/``_history`` before ``{type}`` — and
# this list keeps both.
_ORDER = (
    type_history,
    read,
    metadata,
    system_history,
    search,
    create,
    update,
    delete,
    search_post,
    vread,
    instance_history,
    everything,
    conditional_update,
    conditional_delete,
)
_RANK: dict[object, int] = {endpoint: rank for rank, endpoint in enumerate(_ORDER)}
router.routes.sort(key=lambda route: _RANK.get(getattr(route, "endpoint", None), len(_RANK)))
