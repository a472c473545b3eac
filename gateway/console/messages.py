"""Console pages of the message browser: search, one message, reprocess (issue #19).

Thin adapters over :mod:`gateway.message_browser`: they read the form, check the
role through :func:`gateway.console.web.person` (``messages``, ``raw-hl7``, ``reprocess``)
and leave the AuditEvents.  A message page and a search by record number or
CCCD are views of patient data (DICOM 110110, naming the person and the
patients); a reprocess is an Import (110107) naming the person, the journal
ids, the reason and the outcome.
"""

import datetime as dt
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from fhir_store import (
    JOURNAL_FAILED,
    JOURNAL_IGNORED,
    JOURNAL_PROCESSED,
    JOURNAL_RECEIVED,
    JOURNAL_REJECTED,
    JOURNAL_STALE,
    JournalQuery,
)
from gateway.auth.sessions import Session
from gateway.console.i18n import VIETNAM
from gateway.console.roles import may
from gateway.console.web import console_of, person
from gateway.message_browser import PAGE_SIZE, MessageBrowser, Reprocessed

STATUSES = (
    JOURNAL_RECEIVED,
    JOURNAL_PROCESSED,
    JOURNAL_STALE,
    JOURNAL_IGNORED,
    JOURNAL_FAILED,
    JOURNAL_REJECTED,
)
#: DICOM 110107 Import: a reprocess re-imports journaled messages
IMPORT = "110107"
FILTERS = ("sender", "type", "status", "control_id", "patient", "since", "until")


def _day_us(text: str, *, next_day: bool = False) -> int | None:
    """Start of a ``yyyy-mm-dd`` day in Vietnam time (the next day's start for an inclusive end)."""
    try:
        day = dt.date.fromisoformat(text.strip())
    except ValueError:
        return None
    if next_day:
        day += dt.timedelta(days=1)
    return int(dt.datetime.combine(day, dt.time(), tzinfo=VIETNAM).timestamp() * 1_000_000)


def _query(filters: dict[str, str]) -> JournalQuery:
    return JournalQuery(
        sender=filters["sender"],
        message_type=filters["type"],
        status=filters["status"],
        control_id=filters["control_id"],
        since_us=_day_us(filters["since"]),
        until_us=_day_us(filters["until"], next_day=True),
    )


def _filters(request: Request) -> dict[str, str]:
    return {name: request.query_params.get(name, "")[:200] for name in FILTERS}


def _outcome(results: list[Reprocessed]) -> str:
    counts: dict[str, int] = {}
    for r in results:
        key = f"{r.status_after} {r.ack_after or '-'}"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing to reprocess"


router = APIRouter(include_in_schema=False)


def _browser(request: Request) -> MessageBrowser:
    return MessageBrowser(console_of(request).runtime)


@router.get("/console/messages")
async def messages(request: Request, session: Annotated[Session, Depends(person("messages"))]) -> Response:
    console = console_of(request)
    browser = _browser(request)
    filters = _filters(request)
    try:
        page = max(1, int(request.query_params.get("page", "1")))
    except ValueError:
        page = 1
    query = _query(filters)
    result = await run_in_threadpool(browser.search, query, patient=filters["patient"], page=page)
    groups = []
    if filters["status"] in (JOURNAL_FAILED, JOURNAL_REJECTED):
        groups = await run_in_threadpool(browser.error_groups, query)
    if filters["patient"]:
        # a search by record number or CCCD is a look at those patients' messages
        await console.audit_view(request, session, "hl7 messages by patient identifier", result.patient_ids)
    base = urlencode({k: v for k, v in filters.items() if v})
    return console.page(
        request,
        "messages.html",
        session,
        filters=filters,
        statuses=STATUSES,
        result=result,
        groups=groups,
        page=page,
        pages=max(1, -(-result.total // PAGE_SIZE)),
        base=base,
    )


@router.get("/console/messages/{journal_id}")
async def message(
    request: Request, journal_id: int, session: Annotated[Session, Depends(person("messages"))]
) -> Response:
    console = console_of(request)
    browser = _browser(request)
    raw = may(session.role, "raw-hl7")
    view = await run_in_threadpool(browser.view, journal_id, raw=raw)
    if view is None:
        return console.page(request, "messages_error.html", session, status=404, problem="not-found")
    what = f"hl7 message {journal_id}" + (" (raw HL7)" if raw else " (metadata)")
    await console.audit_view(request, session, what, view.patient_ids)
    return console.page(request, "message.html", session, view=view, raw=raw)


async def _reprocess(request: Request, session: Session, ids: list[int], reason: str) -> Response:
    console = console_of(request)
    browser = _browser(request)
    reason = reason.strip()
    if not reason:
        return console.page(request, "messages_error.html", session, status=400, problem="reason")
    results = await run_in_threadpool(browser.reprocess, ids)
    done = [r.journal_id for r in results]
    await console.audit(
        request,
        session,
        event_type=IMPORT,
        subtype="console-reprocess",
        status=200 if all(r.status_after == JOURNAL_PROCESSED for r in results) else 422,
        description=(
            f"reprocess journal ids {','.join(map(str, done)) or '-'}; reason: {reason[:150]};"
            f" outcome: {_outcome(results)}"
        ),
        patient_ids=tuple(dict.fromkeys(p for r in results for p in r.patient_ids)),
    )
    return console.page(request, "reprocessed.html", session, results=results, reason=reason)


@router.post("/console/messages/{journal_id}/reprocess")
async def reprocess_one(
    request: Request,
    journal_id: int,
    session: Annotated[Session, Depends(person("reprocess"))],
    reason: Annotated[str, Form()] = "",
) -> Response:
    return await _reprocess(request, session, [journal_id], reason)


@router.post("/console/messages/reprocess")
async def reprocess_all(
    request: Request,
    session: Annotated[Session, Depends(person("reprocess"))],
    reason: Annotated[str, Form()] = "",
) -> Response:
    browser = _browser(request)
    form = await request.form()
    filters = {name: str(form.get(name, ""))[:200] for name in FILTERS}
    ids = await run_in_threadpool(browser.matching_ids, _query(filters), patient=filters["patient"])
    return await _reprocess(request, session, ids, reason)
