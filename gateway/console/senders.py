"""Console pages for the feeds' configuration: HL7 senders and CRM webhook dead letters (issue #19).

Thin adapters: the registry (:class:`gateway.sender_registry.SenderRegistry`, the
same operations as ``carebridge senders``) and the CRM bridge's subscriptions
(``Subscriptions.redeliver``, as ``POST /crm/subscriptions/{id}/redeliver``).
Every change is an AuditEvent naming the person (DICOM 110113 Security Alert for
sender configuration, as the CLI records it; who may write patient records is
security configuration); the pages show no patient data.
"""

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from common import CarebridgeError
from crm_bridge import dead_letter_counts
from fhir_store import for_reading
from gateway.auth.sessions import Session
from gateway.console.web import console_of, person
from gateway.sender_registry import SenderRegistry

SECURITY_ALERT = "110113"


router = APIRouter(include_in_schema=False)


def _registry(request: Request) -> SenderRegistry:
    return SenderRegistry(console_of(request).runtime.engine)


async def audit_change(request: Request, session: Session, subtype: str, text: str, ok: bool) -> None:
    console = console_of(request)
    await console.audit(
        request,
        session,
        event_type=SECURITY_ALERT,
        subtype=subtype,
        status=200 if ok else 400,
        description=text,
    )


@router.get("/console/senders")
async def senders(request: Request, session: Annotated[Session, Depends(person("senders"))]) -> Response:
    console = console_of(request)
    rows = await run_in_threadpool(_registry(request).list)
    problem = request.query_params.get("problem", "")[:200]
    return console.page(request, "senders.html", session, senders=rows, problem=problem)


@router.post("/console/senders/charset")
async def set_charset(
    request: Request,
    session: Annotated[Session, Depends(person("senders-edit"))],
    application: Annotated[str, Form()],
    facility: Annotated[str, Form()],
    charset: Annotated[str, Form()] = "",
) -> Response:
    who = f"sender {application[:180]}^{facility[:180]}"
    try:
        found = await run_in_threadpool(_registry(request).set_charset, application, facility, charset)
    except CarebridgeError as exc:
        await audit_change(request, session, "senders-set-charset", f"{who}: refused", False)
        return RedirectResponse(f"/console/senders?problem={exc.message[:150]}", status_code=303)
    await audit_change(
        request, session, "senders-set-charset", f"{who}: charset {charset.strip() or '-'}", found
    )
    return RedirectResponse("/console/senders", status_code=303)


@router.post("/console/senders/enabled")
async def set_enabled(
    request: Request,
    session: Annotated[Session, Depends(person("senders-edit"))],
    application: Annotated[str, Form()],
    facility: Annotated[str, Form()],
    enabled: Annotated[str, Form()] = "",
) -> Response:
    on = enabled == "true"
    found = await run_in_threadpool(_registry(request).set_enabled, application, facility, on)
    action = "enable" if on else "disable"
    who = f"sender {application[:180]}^{facility[:180]}"
    await audit_change(request, session, f"senders-{action}", f"{who}: {action}d", found)
    return RedirectResponse("/console/senders", status_code=303)


@router.get("/console/dead-letters")
async def dead_letters(
    request: Request, session: Annotated[Session, Depends(person("dead-letters"))]
) -> Response:
    console = console_of(request)

    def read() -> list[tuple[str, str, int]]:
        with for_reading(console.runtime.engine).connect() as conn:
            return list(dead_letter_counts(conn))

    rows = await run_in_threadpool(read)
    done = request.query_params.get("requeued", "")[:20]
    return console.page(request, "dead_letters.html", session, rows=rows, requeued=done)


@router.post("/console/dead-letters/redeliver")
async def redeliver(
    request: Request,
    session: Annotated[Session, Depends(person("redeliver"))],
    crm: Annotated[str, Form()],
    subscription: Annotated[str, Form()],
) -> Response:
    console = console_of(request)
    count = await run_in_threadpool(console.runtime.crm.subscriptions.redeliver, crm, subscription)
    await console.audit(
        request,
        session,
        event_type=SECURITY_ALERT,
        subtype="crm-redeliver",
        status=200 if count >= 0 else 404,
        description=f"redeliver dead letters of crm {crm[:64]} subscription {subscription[:40]}: {count}",
    )
    return RedirectResponse(f"/console/dead-letters?requeued={max(count, 0)}", status_code=303)
