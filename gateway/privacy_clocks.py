"""One INFO line when a privacy request becomes near due (issue #19 item 3).

Why: a privacy officer's deadlines (Decree 356/2025/ND-CP Art. 5: acknowledge
within 2 working days, complete within the period of the request's type) must
not be noticed only when someone opens the console; an operator's log shipper
alerts on the line.  The clock state is the rights workflow's own
(``PrivacyRequest.clock_state``); this module only notices the change.

Once per request and state, whichever process notices first: the guard is a row
in ``privacy_clock_notice`` (primary key request + state), so HTTP workers, a
restart or the console listing never repeat the line.  The line carries the
request id, type, state and due date: never patient data (ISO/IEC 27001:2022
A.8.12, A.8.16).  :func:`watch_privacy_clocks` runs in ``carebridge serve``
every ``CHECK_EVERY_S`` seconds; the console's request queue also checks when
it lists.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, Column, Engine, String, Table, insert, select
from sqlalchemy.exc import IntegrityError

from consent import RightsService
from fhir_store import for_writing, new_metadata, now_us

log = logging.getLogger("carebridge.privacy")
VIETNAM = ZoneInfo("Asia/Ho_Chi_Minh")
metadata = new_metadata()
NEAR_DUE = "near-due"
#: The working-day clock moves by days; a check every five minutes is prompt enough.
CHECK_EVERY_S = 300.0

privacy_clock_notice = Table(
    "privacy_clock_notice",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("state", String(16), primary_key=True),
    Column("logged_us", BigInteger, nullable=False),
)


def announce_near_due(engine: Engine, service: RightsService) -> int:
    """Log each open request that is near due and was not logged so yet; returns how many were."""
    now = service.now()
    near = service.find(states=frozenset({NEAR_DUE}))
    if not near:
        return 0
    with engine.connect() as conn:
        seen = {
            str(row[0])
            for row in conn.execute(
                select(privacy_clock_notice.c.request_id).where(privacy_clock_notice.c.state == NEAR_DUE)
            )
        }
    logged = 0
    for req in near:
        if req.id in seen:
            continue
        _state, which, deadline = req.clock_state(service.calendar, now)
        try:
            with for_writing(engine).begin() as conn:
                conn.execute(
                    insert(privacy_clock_notice).values(request_id=req.id, state=NEAR_DUE, logged_us=now_us())
                )
        except IntegrityError:
            continue  # another process logged it first
        log.info(
            "privacy request near due: id=%s type=%s state=%s deadline=%s due=%s",
            req.id,
            req.type,
            req.status,
            which,
            _iso(deadline),
        )
        logged += 1
    return logged


def _iso(instant_us: int) -> str:
    """ISO 8601 in Vietnam time, as the rights workflow shows its deadlines."""
    return dt.datetime.fromtimestamp(instant_us / 1e6, tz=VIETNAM).isoformat(timespec="seconds")


async def watch_privacy_clocks(runtime: Any, every_s: float = CHECK_EVERY_S) -> None:
    """``carebridge serve``'s check, until cancelled; a failed check is a warning, not a stop."""
    while True:
        try:
            await asyncio.to_thread(announce_near_due, runtime.engine, runtime.privacy)
        except Exception as exc:  # the database may be away for a while: try again later
            log.warning("privacy clock check failed: %s", type(exc).__name__)
        await asyncio.sleep(every_s)
