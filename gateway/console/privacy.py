"""The privacy officer's request queue at ``/console/privacy`` (issue #19 item 2).

Decree 356/2025/ND-CP Art. 5 puts a clock on every data-subject request
(acknowledge in 2 working days, complete within the period of its type, one
extension with a reason); the queue shows each request's clock state in colour
with its due dates in Vietnam time, most urgent first.  The page is a thin
adapter over the rights workflow (``consent.RightsService``, the same service
``/privacy/v1`` uses): each step is done with the person's own context, so the
workflow's AuditEvents name the person and their role.  A patient is found by
record number (``gateway.console.privacy_desk``); the lookup, a request's page
(reason, identity verification) and its letter are views of patient data,
each recorded with ``Console.audit_view``.  Plain forms, POST then redirect.
"""

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from common import CarebridgeError
from consent import PrivacyRequest, render_html
from gateway.auth.sessions import Session
from gateway.console.privacy_desk import CLOCK_STATES, file_for_patient, find_by_record_number, queue
from gateway.console.web import console_of, person
from gateway.privacy_clocks import announce_near_due

REQUEST_TYPES = ("erasure", "access", "rectification", "restriction", "objection")
_BODY = re.compile(r"<body>(.*)</body>", re.S)
_ID = "{request_id}"


def _letter_body(document: dict[str, object]) -> str:
    """The workflow's response page without its own head (the console page brings the styles)."""
    page = render_html(document)
    found = _BODY.search(page)
    return found.group(1) if found else page


router = APIRouter(include_in_schema=False)
VIEWER = Depends(person("privacy"))
EDITOR = Depends(person("privacy-edit"))


def _detail(
    request: Request, session: Session, req: PrivacyRequest, status: int = 200, **extra: object
) -> Response:
    console = console_of(request)
    service = console.runtime.privacy
    now = service.now()
    state, which, deadline = req.clock_state(service.calendar, now)
    receipts = service.receipts(req.id) if req.type == "erasure" else []
    return console.page(
        request,
        "privacy_request.html",
        session,
        status=status,
        req=req,
        state=state,
        which=which,
        deadline_us=deadline,
        receipts=receipts,
        done=request.query_params.get("done"),
        **extra,
    )


@router.get("/console/privacy")
async def privacy_queue(
    request: Request,
    session: Annotated[Session, VIEWER],
    state: Annotated[str, Query(max_length=20)] = "",
    type: Annotated[str, Query(max_length=20)] = "",
    mrn: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    console = console_of(request)
    service = console.runtime.privacy
    await run_in_threadpool(announce_near_due, console.runtime.engine, service)
    rows = await run_in_threadpool(
        queue,
        service,
        state=state if state in CLOCK_STATES else None,
        request_type=type if type in REQUEST_TYPES else None,
    )
    matches = []
    if mrn.strip():
        matches = await run_in_threadpool(find_by_record_number, console.runtime.store, mrn)
        await console.audit_view(
            request,
            session,
            f"patient lookup by record number for a privacy request ({len(matches)} found)",
            tuple(m.id for m in matches),
        )
    return console.page(
        request,
        "privacy.html",
        session,
        rows=rows,
        state=state,
        type=type,
        mrn=mrn.strip(),
        matches=matches,
        states=CLOCK_STATES,
        types=REQUEST_TYPES,
        error=None,
    )


@router.post("/console/privacy/file")
async def file_request(
    request: Request,
    session: Annotated[Session, EDITOR],
    patient: Annotated[str, Form(max_length=64)],
    type: Annotated[str, Form(max_length=20)],
    reason: Annotated[str, Form(max_length=2000)] = "",
    verification: Annotated[str, Form(max_length=500)] = "",
) -> Response:
    console = console_of(request)
    service = console.runtime.privacy
    try:
        req = await run_in_threadpool(
            lambda: file_for_patient(
                service,
                console.context(request, session),
                patient_id=patient,
                request_type=type,
                reason=reason,
                verification=verification,
            )
        )
    except CarebridgeError as exc:
        rows = await run_in_threadpool(queue, service)
        return console.page(
            request,
            "privacy.html",
            session,
            status=exc.http_status,
            rows=rows,
            state="",
            type="",
            mrn="",
            matches=[],
            states=CLOCK_STATES,
            types=REQUEST_TYPES,
            error=exc.message,
        )
    return RedirectResponse(f"/console/privacy/{req.id}?done=filed", status_code=303)


@router.get(f"/console/privacy/{_ID}")
async def privacy_request(request: Request, request_id: str, session: Annotated[Session, VIEWER]) -> Response:
    console = console_of(request)
    service = console.runtime.privacy
    try:
        req = await run_in_threadpool(service.get, request_id)
    except CarebridgeError as exc:
        return console.page(request, "error.html", session, status=exc.http_status, message=exc.message)
    await console.audit_view(request, session, f"privacy request {req.id}", (req.patient_id,))
    return await run_in_threadpool(_detail, request, session, req)


async def _step(request: Request, session: Session, request_id: str, step: str, **form: str) -> Response:
    console = console_of(request)
    service = console.runtime.privacy
    context = console.context(request, session)

    def run() -> PrivacyRequest:
        if step == "acknowledge":
            return service.acknowledge(context, request_id)
        if step == "extend":
            days = int(form["days"]) if form["days"].isdigit() else 0
            return service.extend(context, request_id, days, form["reason"])
        if step == "process":
            body = {"resolution": form["resolution"]} if form.get("resolution", "").strip() else {}
            return service.process(context, request_id, body)
        return service.close(context, request_id, form["reason"], form.get("outcome") == "rejected")

    try:
        await run_in_threadpool(run)
    except CarebridgeError as exc:
        status, message = exc.http_status, exc.message
        req = await run_in_threadpool(service.get, request_id)
        return await run_in_threadpool(lambda: _detail(request, session, req, status, error=message))
    return RedirectResponse(f"/console/privacy/{request_id}?done={step}", status_code=303)


@router.post(f"/console/privacy/{_ID}/acknowledge")
async def acknowledge(request: Request, request_id: str, session: Annotated[Session, EDITOR]) -> Response:
    return await _step(request, session, request_id, "acknowledge")


@router.post(f"/console/privacy/{_ID}/extend")
async def extend(
    request: Request,
    request_id: str,
    session: Annotated[Session, EDITOR],
    days: Annotated[str, Form(max_length=3)] = "",
    reason: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    return await _step(request, session, request_id, "extend", days=days, reason=reason)


@router.post(f"/console/privacy/{_ID}/process")
async def process(
    request: Request,
    request_id: str,
    session: Annotated[Session, EDITOR],
    resolution: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    return await _step(request, session, request_id, "process", resolution=resolution)


@router.post(f"/console/privacy/{_ID}/close")
async def close(
    request: Request,
    request_id: str,
    session: Annotated[Session, EDITOR],
    reason: Annotated[str, Form(max_length=2000)] = "",
    outcome: Annotated[str, Form(max_length=10)] = "closed",
) -> Response:
    return await _step(request, session, request_id, "close", reason=reason, outcome=outcome)


@router.get(f"/console/privacy/{_ID}/letter")
async def letter(request: Request, request_id: str, session: Annotated[Session, VIEWER]) -> Response:
    console = console_of(request)
    service = console.runtime.privacy
    try:
        req = await run_in_threadpool(service.get, request_id)
    except CarebridgeError as exc:
        return console.page(request, "error.html", session, status=exc.http_status, message=exc.message)
    if req.response is None:
        return RedirectResponse(f"/console/privacy/{req.id}", status_code=303)
    document = dict(req.response)
    if req.type == "erasure":
        document["processors"] = await run_in_threadpool(service.receipts, req.id)
    await console.audit_view(request, session, f"privacy request {req.id} letter", (req.patient_id,))
    return console.page(request, "privacy_letter.html", session, req=req, letter=_letter_body(document))
