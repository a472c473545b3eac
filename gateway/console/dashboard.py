"""The console dashboard: the numbers an integration engineer and a privacy officer check first.

Read at request time from the same public functions ``/metrics`` uses (journal,
CRM outbox and dead letters, HIS booking queue, audit chain and checkpoint,
privacy clocks), so the page and the alerts never disagree.  Counts and ids
only: the dashboard shows no patient data, so viewing it is not a patient view.
The panel refreshes itself every ``REFRESH_S`` seconds through htmx.
"""

import time
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from audit import chain_length, last_checkpoint
from crm_bridge import dead_letter_counts, his_outbox_counts, webhook_backlogs
from fhir_store import JOURNAL_OPEN_STATUSES, for_reading, journal_open_counts
from gateway.auth.sessions import Session
from gateway.console.web import Console, console_of, person

REFRESH_S = 10
CLOCK_STATES = ("on-time", "near-due", "overdue")


@dataclass
class Numbers:
    journal: dict[str, int] = field(default_factory=dict)
    webhooks: list[tuple[str, str, int]] = field(default_factory=list)  # crm, subscription, backlog
    dead_letters: list[tuple[str, str, int]] = field(default_factory=list)
    bookings: dict[str, int] = field(default_factory=dict)
    privacy: dict[str, int] = field(default_factory=dict)
    audit_events: int = 0
    checkpoint_seq: int = 0
    checkpoint_us: int | None = None
    read_at_us: int = 0


def read_numbers(console: Console) -> Numbers:
    runtime = console.runtime
    numbers = Numbers(read_at_us=time.time_ns() // 1000)
    with for_reading(runtime.engine).connect() as conn:
        open_counts = journal_open_counts(conn)
        numbers.journal = {status: open_counts.get(status, (0, None))[0] for status in JOURNAL_OPEN_STATUSES}
        numbers.webhooks = [(crm, sub, count) for crm, sub, count, _ in webhook_backlogs(conn)]
        numbers.dead_letters = list(dead_letter_counts(conn))
        numbers.bookings = dict(his_outbox_counts(conn))
        numbers.audit_events = chain_length(conn)
        checkpoint = last_checkpoint(conn)
    if checkpoint:
        numbers.checkpoint_seq, numbers.checkpoint_us = checkpoint[0], checkpoint[1]
    service = runtime.privacy
    now = service.now()
    counts = dict.fromkeys(CLOCK_STATES, 0)
    for req in service.find(states=frozenset(CLOCK_STATES)):
        counts[req.clock_state(service.calendar, now)[0]] += 1
    numbers.privacy = counts
    return numbers


router = APIRouter(include_in_schema=False)


@router.get("/console")
async def dashboard(request: Request, session: Annotated[Session, Depends(person("dashboard"))]) -> Response:
    console = console_of(request)
    numbers = await run_in_threadpool(read_numbers, console)
    return console.page(request, "dashboard.html", session, numbers=numbers, refresh_s=REFRESH_S)


@router.get("/console/dashboard/panel")
async def panel(request: Request, session: Annotated[Session, Depends(person("dashboard"))]) -> Response:
    console = console_of(request)
    numbers = await run_in_threadpool(read_numbers, console)
    return console.page(request, "dashboard_panel.html", session, numbers=numbers, refresh_s=REFRESH_S)
