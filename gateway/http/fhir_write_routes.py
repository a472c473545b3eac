"""FHIR R4 write interactions on ``/fhir``: create, update, delete and their conditional forms.

https://hl7.org/fhir/R4/http.html.  Writes with a body are ``async`` because
they stream and bound the body first (:func:`gateway.http.responses.read_body`),
then hand the store call to the threadpool; deletes have no body and are plain
``def``.  Routes are declared hottest first (create, update, delete); no two of
them can match the same request, so their order does not matter otherwise.  Reads are in :mod:`gateway.http.fhir_read_routes`.
Every write route first checks the Host its ``Location`` would carry
(:func:`gateway.http.responses.require_link_host`), so a refused Host changes nothing.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from common import InvalidInput
from fhir_store import (
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
from gateway.http.capability import require
from gateway.http.errors import outcome
from gateway.http.media import negotiate, require_json
from gateway.http.responses import (
    fhir_response,
    prefer_return,
    read_body,
    require_link_host,
    store_of,
    write_response,
)
from gateway.http.route_params import IdParam, RestContext, TypeParam

router = APIRouter(prefix="/fhir", tags=["FHIR"], dependencies=[Depends(require_link_host)])

_WRITE_ERRORS = (400, 404, 405, 409, 412, 413, 415, 422)


def _transact(request: Request, op: Operation, context: RequestContext) -> OperationResult:
    return store_of(request).transact([op], context)[0]


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
async def create(request: Request, resource_type: TypeParam, context: RestContext) -> Response:
    negotiate(request.headers, request.query_params)
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
    context: RestContext,
) -> Response:
    negotiate(request.headers, request.query_params)
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
    context: RestContext,
) -> Response:
    negotiate(request.headers, request.query_params)
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


@router.put(
    "/{type}",
    summary="conditional update (?identifier=system|value)",
    response_class=Response,
    responses=doc.responses(
        {200: ("Updated", doc.RESOURCE), 201: ("Created", doc.RESOURCE)}, _WRITE_ERRORS, ("ETag", "Location")
    ),
    openapi_extra=doc.extra([*doc.CRITERIA, doc.PREFER], doc.body()),
)
async def conditional_update(request: Request, resource_type: TypeParam, context: RestContext) -> Response:
    negotiate(request.headers, request.query_params)
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
def conditional_delete(request: Request, resource_type: TypeParam, context: RestContext) -> Response:
    negotiate(request.headers, request.query_params)
    require(resource_type, "delete")
    result = _transact(request, ConditionalDelete(resource_type, _criteria(request)), context)
    return _delete_response(request, result, f"{resource_type}?{_criteria(request)}")
