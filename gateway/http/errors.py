"""Every failure leaves the API as a FHIR ``OperationOutcome`` with the right status.

The one exception tree (:mod:`common.errors`) carries ``http_status``,
``issue_code`` and the element path; this module renders it
(https://hl7.org/fhir/R4/operationoutcome.html, https://hl7.org/fhir/R4/http.html#ops).
FastAPI's own request-validation errors (422 by default) are client errors in
FHIR terms and become 400; routing 404/405 become OperationOutcomes too.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from common.errors import CarebridgeError
from gateway.http.media import FHIR_JSON_UTF8

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


async def _carebridge_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CarebridgeError)
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
