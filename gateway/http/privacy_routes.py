"""HTTP API of the patients' rights workflow: ``/privacy/v1/requests`` (DESIGN.md §2).

Who may do what (deny by default, ISO/IEC 27001:2022 A.5.15):

* role ``patient`` (token bound to one patient): file a request for *their own*
  record only, follow their requests and read the response documents;
* role ``privacy_officer`` (staff): file on a patient's behalf with an
  identity-verification note, list (``?overdue=true``, ``?near_due=true``),
  acknowledge, process, extend once (reason required) and close/reject;
* role ``crm`` (a configured CRM client): confirm the deletion of an erased
  patient (``POST /privacy/v1/erasure-receipts``), Law 91/2025/QH15 Art. 14.

Request types: erasure, access, rectification, restriction, objection, withdrawal.
Deadlines follow Decree 356/2025/ND-CP Art. 5 (the table: ``consent.rights.deadlines``).
Errors are FHIR OperationOutcomes; refusals are audited once and change nothing
(who the caller is and which role it has: :mod:`gateway.http.principal`).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from common import Forbidden, InvalidInput, NotFound
from consent import PrivacyClockCollector, PrivacyRequest, RightsService, render_html
from gateway.http.errors import AUDITED_STATE
from gateway.http.openapi_docs import auth_errors, not_found
from gateway.http.principal import Caller, PrivacyCaller, ReceiptCaller
from gateway.http.responses import runtime_of

STAFF_ROLES = frozenset({"privacy_officer"})


def _staff(caller: Caller) -> bool:
    return caller.principal.role in STAFF_ROLES


def _service(request: Request) -> RightsService:
    return runtime_of(request).privacy


def _refuse(request: Request, caller: Caller, message: str, patient_id: str | None = None) -> Forbidden:
    """A refusal after authentication (not the caller's patient, not staff), audited once here."""
    runtime_of(request).audit.record_denial(
        caller.context, "privacy-api", patient_ids=[patient_id] if patient_id else [], reason=message
    )
    setattr(request.state, AUDITED_STATE, True)
    return Forbidden(message, location="patient")


def _require_staff(request: Request, caller: Caller) -> None:
    if not _staff(caller):
        raise _refuse(request, caller, f"role '{caller.principal.role}' may not manage privacy requests")


def _visible(request: Request, caller: Caller, req: PrivacyRequest) -> None:
    if not _staff(caller) and req.patient_id != caller.principal.patient_id:
        raise NotFound("unknown privacy request", location="id")  # never confirm another patient's request


def _render(service: RightsService, req: PrivacyRequest, caller: Caller) -> dict[str, Any]:
    return req.to_json(service.calendar, service.now(), staff=_staff(caller))


def _patient_ref(value: Any) -> str:
    text = str(value or "").strip()
    return text.removeprefix("Patient/")


router = APIRouter(prefix="/privacy/v1", tags=["privacy"], responses={**auth_errors(), **not_found()})


@router.post("/requests", status_code=201, summary="File a data-subject request (Decree 356/2025 Art. 5)")
async def file_request(request: Request, body: dict[str, Any], caller: PrivacyCaller) -> dict[str, Any]:
    service = _service(request)
    wanted = _patient_ref(body.get("patient"))
    verification: str | None = None
    if _staff(caller):
        if not wanted:
            raise InvalidInput(
                "patient (Patient/<id>) is required when staff file a request", location="patient"
            )
        verification = str(body.get("identity_verification") or "").strip()
        if len(verification) < 5:
            raise InvalidInput(
                "staff filing on a patient's behalf must record how the identity was verified",
                location="identity_verification",
            )
    else:
        own = str(caller.principal.patient_id)
        if wanted and wanted != own:
            raise _refuse(request, caller, "a patient may file requests only for their own record", own)
        wanted = own
    scope = body.get("scope") or {}
    if not isinstance(scope, dict):
        raise InvalidInput("scope must be an object", location="scope")
    req = await run_in_threadpool(
        service.file,
        caller.context,
        patient_id=wanted,
        request_type=str(body.get("type") or ""),
        scope=scope,
        reason=str(body.get("reason") or ""),
        verification=verification,
    )
    return _render(service, req, caller)


@router.get("/requests", summary="List requests (staff: all, ?overdue=true / ?near_due=true; patient: own)")
async def list_requests(
    request: Request,
    caller: PrivacyCaller,
    overdue: bool = Query(False),
    near_due: bool = Query(False),
    status: str | None = Query(None),
    patient: str | None = Query(None),
) -> dict[str, Any]:
    service = _service(request)
    states: set[str] = set()
    if overdue:
        states.add("overdue")
    if near_due:
        states.add("near-due")
    patient_id = _patient_ref(patient) or None
    if not _staff(caller):
        patient_id = caller.principal.patient_id
    found = await run_in_threadpool(
        service.find, patient_id=patient_id, status=status, states=frozenset(states) if states else None
    )
    return {"requests": [_render(service, r, caller) for r in found], "total": len(found)}


@router.get("/requests/{request_id}", summary="Follow one request: status and clocks")
async def get_request(request: Request, request_id: str, caller: PrivacyCaller) -> dict[str, Any]:
    service = _service(request)
    req = await run_in_threadpool(service.get, request_id)
    _visible(request, caller, req)
    body = _render(service, req, caller)
    if req.type == "erasure":
        body["processors"] = await run_in_threadpool(service.receipts, req.id)
    return body


@router.get(
    "/requests/{request_id}/response",
    summary="The response document (JSON, or readable HTML with ?format=html)",
    response_model=None,
)
async def response_document(
    request: Request,
    request_id: str,
    caller: PrivacyCaller,
    format: str = Query("json", pattern="^(json|html)$"),
) -> JSONResponse | HTMLResponse:
    service = _service(request)
    req = await run_in_threadpool(service.get, request_id)
    _visible(request, caller, req)
    if req.response is None:
        raise NotFound("the request has no response document yet", location="id")
    document = dict(req.response)
    if req.type == "erasure":
        document["processors"] = await run_in_threadpool(service.receipts, req.id)
    if format == "html":
        return HTMLResponse(render_html(document))
    return JSONResponse(document)


def _staff_step(name: str) -> Any:
    async def step(
        request: Request,
        request_id: str,
        caller: PrivacyCaller,
        body: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        _require_staff(request, caller)
        service = _service(request)
        data = body or {}
        if name == "acknowledge":
            req = await run_in_threadpool(service.acknowledge, caller.context, request_id)
        elif name == "extend":
            days = data.get("days")  # absent: the longest extension the request's type allows
            if days is not None and (not isinstance(days, int) or isinstance(days, bool)):
                raise InvalidInput("days must be an integer", location="days")
            req = await run_in_threadpool(
                service.extend, caller.context, request_id, days, str(data.get("reason") or "")
            )
        elif name == "process":
            req = await run_in_threadpool(service.process, caller.context, request_id, data)
        else:
            rejected = str(data.get("outcome") or "closed") == "rejected"
            req = await run_in_threadpool(
                service.close, caller.context, request_id, str(data.get("reason") or ""), rejected
            )
        return _render(service, req, caller)

    step.__name__ = f"{name}_request"
    return step


for _name, _summary in (
    ("acknowledge", "Staff: acknowledge (due within 2 working days)"),
    ("process", "Staff: carry out the request (erasure, access export, ...)"),
    (
        "extend",
        "Staff: extend the deadline once, with a reason (at most 15 days for withdrawal, restriction and "
        "objection, 20 for the others: Decree 356/2025 Art. 5)",
    ),
    ("close", "Staff: close a completed request, or reject one (outcome=rejected) with a reason"),
):
    router.add_api_route(
        f"/requests/{{request_id}}/{_name}", _staff_step(_name), methods=["POST"], summary=_summary
    )


@router.post("/erasure-receipts", summary="CRM: confirm the deletion of an erased patient (deletion receipt)")
async def erasure_receipt(request: Request, body: dict[str, Any], caller: ReceiptCaller) -> dict[str, Any]:
    subject = str(body.get("subject") or "").strip()
    if not subject:
        raise InvalidInput(
            "subject (the pseudonym of the patient.erased event) is required", location="subject"
        )
    service = _service(request)
    req = await run_in_threadpool(
        service.confirm_receipt, caller.context, caller.principal.client_id, subject, body.get("note")
    )
    return {"request": req.id, "status": req.status, "confirmed": True}


def install(app: FastAPI) -> None:
    """Include the router and register the deadline gauge in the app's metrics registry."""
    app.include_router(router)
    app.state.metrics.registry.register(PrivacyClockCollector(app.state.runtime.privacy))
