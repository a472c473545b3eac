"""Event-time ordering of HL7 v2 writes: an older message never overwrites newer state.

HL7 v2 gives no ordering guarantee across retries, queues and connections, so
arrival order is not event order: an A04 (08:30) that arrives after the A03
(10:15) of the same visit would reopen it.  Every resource a message *sets*
(a conditional update: the full-picture events, see ``mappers.adt``) remembers
the event time of the message that last set it (``resource_event_time``), and
a message whose event time is older than that is held back for that resource:
the write is skipped, the message is journaled ``stale`` naming the newer
event, and the sender gets AA (it did nothing wrong).  Same-time ties are
applied in arrival order.  Conditional creates (a thin PID that only creates
an unknown patient) set no time: any message that sets the resource may
replace what they wrote.  REST writes carry their own versioning (ETags,
If-Match) and neither check nor set event times.

A merged Patient also remembers the merge's event time.  A message naming its
retired record number that happened *before* the merge is that record's
history: it updates the retired record (kept inactive and linked) instead of
the survivor, so the end state does not depend on whether the merge arrived
before or after it; references to the patient still go to the survivor.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import Connection, case, or_, select, tuple_
from sqlalchemy.dialects import postgresql, sqlite

from fhir_store.instants import format_instant
from fhir_store.model import OperationResult, RequestContext
from fhir_store.schema import resource_event_time

_t = resource_event_time

STALE = "stale"
"""``OperationResult.message`` prefix of a write held back as older than the stored state."""


@dataclass(frozen=True, slots=True)
class EventOrder:
    """The event time of the message being applied, and the request id that names it."""

    us: int
    source: str


@dataclass(frozen=True, slots=True)
class EventStamp:
    """What ``resource_event_time`` holds for one resource."""

    event_us: int | None
    event_source: str | None
    merged_us: int | None


Key = tuple[str, str]


def event_order(context: RequestContext) -> EventOrder | None:
    """The ordering a write is subject to: HL7 messages that carry an event time only."""
    if context.channel != "hl7" or context.event_time_us is None:
        return None
    return EventOrder(context.event_time_us, context.request_id)


def load_stamps(conn: Connection, keys: Iterable[Key]) -> dict[Key, EventStamp]:
    """The stamps of ``keys`` (absent keys have none), in one query."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    rows = conn.execute(
        select(_t.c.res_type, _t.c.res_id, _t.c.event_us, _t.c.event_source, _t.c.merged_us).where(
            tuple_(_t.c.res_type, _t.c.res_id).in_(wanted)
        )
    )
    return {(r[0], r[1]): EventStamp(r[2], r[3], r[4]) for r in rows}


def is_older(stamp: EventStamp | None, event: EventOrder) -> bool:
    """Whether a message at ``event`` is older than what the resource holds (ties are not)."""
    return stamp is not None and stamp.event_us is not None and event.us < stamp.event_us


def stale_note(resource_type: str, resource_id: str, stamp: EventStamp) -> str:
    """Why a write was held back: the resource and the newer event (ids and times, no patient data)."""
    assert stamp.event_us is not None
    return (
        f"{STALE}: {resource_type}/{resource_id} holds a newer event "
        f"({format_instant(stamp.event_us)}, {stamp.event_source or 'unknown'})"
    )


def stale_notes(results: Iterable[OperationResult]) -> list[str]:
    """The held-back writes among a transaction's results, as :func:`stale_note` texts."""
    return [r.message for r in results if r.message is not None and r.message.startswith(f"{STALE}:")]


def _insert(conn: Connection):  # type: ignore[no-untyped-def]
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(_t)


def save_stamps(conn: Connection, keys: Iterable[Key], event: EventOrder) -> None:
    """Record ``event`` as the time that set each of ``keys``; a newer stored time is kept."""
    rows = [
        {"res_type": k[0], "res_id": k[1], "event_us": event.us, "event_source": event.source[:64]}
        for k in sorted(set(keys))
    ]
    if not rows:
        return
    stmt = _insert(conn)
    newer = or_(_t.c.event_us.is_(None), stmt.excluded.event_us >= _t.c.event_us)
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[_t.c.res_type, _t.c.res_id],
            set_={
                "event_us": case((newer, stmt.excluded.event_us), else_=_t.c.event_us),
                "event_source": case((newer, stmt.excluded.event_source), else_=_t.c.event_source),
            },
        ),
        rows,
    )


def mark_merged(conn: Connection, patient_id: str, event: EventOrder) -> None:
    """Record when the Patient ``patient_id`` was retired by a merge (the newest merge time wins)."""
    stmt = _insert(conn)
    later = or_(_t.c.merged_us.is_(None), stmt.excluded.merged_us > _t.c.merged_us)
    conn.execute(
        stmt.values(res_type="Patient", res_id=patient_id, merged_us=event.us).on_conflict_do_update(
            index_elements=[_t.c.res_type, _t.c.res_id],
            set_={"merged_us": case((later, stmt.excluded.merged_us), else_=_t.c.merged_us)},
        )
    )


def predates_merge(conn: Connection, patient_id: str, event: EventOrder) -> bool:
    """Whether a message at ``event`` happened before the merge that retired ``patient_id``."""
    merged = load_stamps(conn, [("Patient", patient_id)]).get(("Patient", patient_id))
    return merged is not None and merged.merged_us is not None and event.us < merged.merged_us
