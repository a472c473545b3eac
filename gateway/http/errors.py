"""Every failure leaves the API as a FHIR ``OperationOutcome`` with the right status.

The one exception tree (:mod:`common.errors`) carries ``http_status``,
``issue_code`` and the element path; this module renders it
(https://hl7.org/fhir/R4/operationoutcome.html, https://hl7.org/fhir/R4/http.html#ops).
FastAPI's own request-validation errors (422 by default) are client errors in
FHIR terms and become 400; routing 404/405 become OperationOutcomes too.

Denials and failed writes are audited here (IHE BALP: outcome 12 for 401/403,
4/8 for other failures), because they never reach the store's audit hook.
Denials raised by authentication (:mod:`gateway.http.principal`, every channel)
are already recorded there and marked with ``request.state.audit_recorded`` so
they are not recorded twice; denials raised later on a FHIR route, inside the
store path (scope policy hook on a Bundle entry, patient compartment) or by a
route's own scope check, are recorded here with the caller's context, which
authentication keeps on ``request.state``; so are refusals answered as 404
(:class:`common.Concealed`: outside a patient's compartment, another caller's
paging link), with their reason, which the caller never sees.  Only codes and fixed texts go into the event, never the
error message of an input error (it can quote patient data).
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from common import CarebridgeError, Concealed, Forbidden, Unauthenticated
from fhir_store import RequestContext
from gateway.http.media import FHIR_JSON_UTF8
from gateway.logging_setup import get_logger

log = get_logger("carebridge.http")
#: ``request.state`` attributes: the caller's context once authenticated, and
#: "this request's denial is already in the audit trail".
CONTEXT_STATE = "carebridge_context"
AUDITED_STATE = "audit_recorded"
_WRITE_METHODS = frozenset({"POST", "PUT", "DELETE", "PATCH"})

# http://hl7.org/fhir/valueset-issue-type.html codes for plain HTTP statuses.
_STATUS_CODES = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "business-rule",
}


def outcome(
    message: str,
    *,
    code: str = "exception",
    location: str | None = None,
    severity: str = "error",
) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": message}
    if location:
        issue["expression"] = [location]
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def error_outcome(exc: CarebridgeError) -> dict[str, Any]:
    return outcome(exc.message, code=exc.issue_code, location=exc.location)


def outcome_response(body: dict[str, Any], status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=FHIR_JSON_UTF8, headers=headers)


def error_response(exc: CarebridgeError) -> Response:
    return outcome_response(error_outcome(exc), exc.http_status)


def interaction_for(method: str, route_path: str) -> str:
    """The FHIR restful-interaction code of a route (for the audit event's subtype)."""
    if method == "GET":
        if route_path.endswith("/metadata"):
            return "capabilities"
        if route_path.endswith("/_history/{vid}"):
            return "vread"
        if route_path.endswith("/_history"):
            return "history-instance" if "{id}" in route_path else "history-type"
        if route_path.endswith("{id}"):
            return "read"
        if "$" in route_path:
            return "operation"
        return "search-type"
    if method == "POST":
        if route_path == "/fhir":
            return "transaction"
        return "search-type" if route_path.endswith("/_search") else "create"
    return {"PUT": "update", "DELETE": "delete", "PATCH": "patch"}.get(method, "operation")


def _audit_context(request: Request) -> RequestContext:
    context = getattr(request.state, CONTEXT_STATE, None)
    if isinstance(context, RequestContext):
        return context
    from gateway.http.request_context import REQUEST_ID_KEY  # import cycle: request_context imports us

    client = request.client
    return RequestContext(
        str(request.scope.get(REQUEST_ID_KEY) or ""),
        client_id="unauthenticated",
        role="unknown",
        channel="rest",
        source_address=client.host if client else None,
    )


async def audit_error(request: Request, exc: CarebridgeError) -> None:
    """Record a denial (401/403) or a failed write; never let auditing change the response.

    A denial is recorded even on reads (who was refused what is the point of a
    security log); other failures only on writes, where one extra commit is
    cheap next to the write that was attempted.
    """
    runtime = getattr(request.app.state, "runtime", None)
    hook = getattr(runtime, "audit", None)
    if hook is None or getattr(request.state, AUDITED_STATE, False):
        return
    if not request.url.path.startswith("/fhir"):  # the CRM and privacy routes audit their own refusals
        return
    # A refusal answered as 404 (common.Concealed) is still a denial for the trail.
    denial = isinstance(exc, Forbidden | Unauthenticated | Concealed)
    if not denial and request.method not in _WRITE_METHODS:
        return
    route = request.scope.get("route")
    interaction = interaction_for(request.method, str(getattr(route, "path", request.url.path)))
    context = _audit_context(request)
    try:
        if denial:
            reason = exc.reason if isinstance(exc, Concealed) else exc.message
            await run_in_threadpool(hook.record_denial, context, interaction, reason=reason)
        else:
            description = f"HTTP {exc.http_status} {exc.issue_code}"
            await run_in_threadpool(
                hook.record_failure, context, interaction, exc.http_status, description=description
            )
        setattr(request.state, AUDITED_STATE, True)
    except Exception as failure:  # the response still goes out; the log names the type only
        log.error("audit of a refused request failed", error_type=type(failure).__name__)


async def _carebridge_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CarebridgeError)
    await audit_error(request, exc)
    return error_response(exc)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    location = ".".join(str(part) for part in first.get("loc", ()) if part != "body") or None
    message = str(first.get("msg", "invalid request"))
    return outcome_response(outcome(message, code="invalid", location=location), 400)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    if status == 404:
        message = f"no FHIR endpoint at {request.url.path}"
    elif status == 405:
        message = f"{request.method} is not supported on {request.url.path}"
    else:
        message = str(exc.detail)
    headers = dict(exc.headers) if exc.headers else None
    return outcome_response(outcome(message, code=_STATUS_CODES.get(status, "exception")), status, headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(CarebridgeError, _carebridge_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
