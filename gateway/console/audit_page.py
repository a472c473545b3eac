"""The audit page: verify the chain against the anchors, see the last checkpoint (issue #19).

Why (ISO/IEC 27001:2022 A.5.33, A.8.15): tamper evidence is worth only the
check someone actually runs; the compliance officer runs ``carebridge audit
verify --anchors`` from here, with the server's key and the anchor file of the
settings (``CAREBRIDGE_AUDIT_ANCHOR_FILE``), without a shell on the server.
Each run leaves an AuditEvent naming the person and the result.  The form posts
and redirects (no JavaScript needed); the last result is kept per person in
memory (it holds counts and a reason, no patient data).
"""

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from audit import TrailCheck, chain_length, last_checkpoint, verify_with_anchors
from fhir_store import for_reading, now_us
from gateway.auth.sessions import Session
from gateway.console.web import Console, console_of, person

#: DICOM 110112 Query: a search over the audit trail itself.
QUERY = "110112"


@dataclass(frozen=True)
class Chain:
    events: int
    checkpoint_seq: int
    checkpoint_us: int | None


def read_chain(console: Console) -> Chain:
    with for_reading(console.runtime.engine).connect() as conn:
        events = chain_length(conn)
        checkpoint = last_checkpoint(conn)
    return Chain(events, *(checkpoint or (0, None)))


def outcome_line(check: TrailCheck) -> str:
    if check.result is None:
        return f"audit verify: not run ({check.problem})"
    return (
        f"audit verify ({check.anchors} anchors): {check.result.line()}; unanchored {check.result.unanchored}"
    )


router = APIRouter(include_in_schema=False)
PERSON = Depends(person("audit"))


@router.get("/console/audit")
async def page(request: Request, session: Annotated[Session, PERSON]) -> Response:
    console = console_of(request)
    chain = await run_in_threadpool(read_chain, console)
    check, checked_us = console.last_checks.get(session.username, (None, None))
    return console.page(
        request,
        "audit.html",
        session,
        events=chain.events,
        checkpoint_seq=chain.checkpoint_seq,
        checkpoint_us=chain.checkpoint_us,
        anchor_file=str(console.settings.audit.anchor_path),
        check=check,
        checked_us=checked_us,
    )


@router.post("/console/audit/verify")
async def verify(request: Request, session: Annotated[Session, PERSON]) -> Response:
    console = console_of(request)
    anchor_path = console.settings.audit.anchor_path
    check = await run_in_threadpool(verify_with_anchors, console.runtime.audit, anchor_path)
    console.last_checks[session.username] = (check, now_us())
    await console.audit(
        request,
        session,
        event_type=QUERY,
        subtype="audit-verify",
        status=200 if check.result is not None and check.result.ok else 500,
        description=f"console: {outcome_line(check)}",
    )
    return RedirectResponse("/console/audit", status_code=303)
