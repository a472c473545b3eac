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

from sqlalchemy import Connection

from fhir_store.driver_sql import DriverQuery
from fhir_store.instants import format_instant
from fhir_store.model import OperationResult, RequestContext

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
    """The stamps of ``keys`` (absent keys have none): one statement per key, on the driver path."""
    found: dict[Key, EventStamp] = {}
    for key in sorted(set(keys)):
        row = _LOAD.first(conn, {"t": key[0], "i": key[1]})
        if row is not None:
            found[key] = EventStamp(row[0], row[1], row[2])
    return found


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


# Statements of the write hot path run on the driver cursor (fhir_store.driver_sql); the
# upsert is ``INSERT ... ON CONFLICT DO UPDATE``, the same text on SQLite (3.24+) and PostgreSQL.
_LOAD = DriverQuery(
    "SELECT event_us, event_source, merged_us FROM resource_event_time WHERE res_type = :t AND res_id = :i"
)
_SAVE = DriverQuery(
    "INSERT INTO resource_event_time (res_type, res_id, event_us, event_source) VALUES (:t, :i, :e, :s)"
    " ON CONFLICT (res_type, res_id) DO UPDATE SET"
    " event_source = CASE WHEN resource_event_time.event_us IS NULL"
    " OR excluded.event_us >= resource_event_time.event_us"
    " THEN excluded.event_source ELSE resource_event_time.event_source END,"
    " event_us = CASE WHEN resource_event_time.event_us IS NULL"
    " OR excluded.event_us >= resource_event_time.event_us"
    " THEN excluded.event_us ELSE resource_event_time.event_us END"
)
_MERGED = DriverQuery(
    "INSERT INTO resource_event_time (res_type, res_id, merged_us) VALUES ('Patient', :i, :m)"
    " ON CONFLICT (res_type, res_id) DO UPDATE SET merged_us = CASE"
    " WHEN resource_event_time.merged_us IS NULL OR excluded.merged_us > resource_event_time.merged_us"
    " THEN excluded.merged_us ELSE resource_event_time.merged_us END"
)


def save_stamps(conn: Connection, keys: Iterable[Key], event: EventOrder) -> None:
    """Record ``event`` as the time that set each of ``keys``; a newer stored time is kept.

    Keys are taken in sorted order, so two transactions lock the rows in the same order.
    """
    for key in sorted(set(keys)):
        _SAVE.rowcount(conn, {"t": key[0], "i": key[1], "e": event.us, "s": event.source[:64]})


def mark_merged(conn: Connection, patient_id: str, event: EventOrder) -> None:
    """Record when the Patient ``patient_id`` was retired by a merge (the newest merge time wins)."""
    _MERGED.rowcount(conn, {"i": patient_id, "m": event.us})


def predates_merge(conn: Connection, patient_id: str, event: EventOrder) -> bool:
    """Whether a message at ``event`` happened before the merge that retired ``patient_id``."""
    merged = load_stamps(conn, [("Patient", patient_id)]).get(("Patient", patient_id))
    return merged is not None and merged.merged_us is not None and event.us < merged.merged_us
