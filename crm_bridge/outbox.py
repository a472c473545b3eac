"""The transactional outbox: sealed CRM events in commit order, and the pseudonym links they name.

Why: an event must exist iff its change committed, so events are inserted by
the store hook (``crm_bridge.outbox_hook``) inside the change's transaction;
``seq`` is the change-feed cursor and must be commit order, so inserts are
serialized.  Payloads may carry consented contact data, so they are sealed
under the CRM field key (Decree 356/2025/ND-CP Art. 9).

Besides :func:`append_events`, this module keeps the pseudonym link table
(``crm_pseudonym``): recording a link on first use, resolving a pseudonym
(bookings, re-identification), rotating a CRM's pseudonym key with an old →
new mapping event, and destroying every link and undelivered event of a
patient on erasure (Law 91/2025 Art. 14).
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, delete, select

from consent import KeyStore
from crm_bridge.schema import crm_disclosure, crm_outbox, crm_pseudonym
from fhir_store import driver_cursor, format_instant, now_us, run_on_driver

_OUTBOX_LOCK = 0x43524D31  # pg_advisory_xact_lock key ("CRM1")


@dataclass(frozen=True)
class PendingEvent:
    crm_id: str
    event_type: str
    patient_id: str | None
    subject: str | None
    data: dict[str, Any]
    purposes: tuple[str, ...] = ()  # purposes it is disclosed under ("" in the row: not purpose-bound)


@dataclass(frozen=True)
class PseudonymLink:
    """A row of ``crm_pseudonym``: recorded once, on the first disclosure under that pseudonym."""

    crm_id: str
    pseudonym: str
    patient_id: str


def pseudonym_link(keys: KeyStore, crm_id: str, patient_id: str) -> PseudonymLink:
    """The CRM's current pseudonym for the patient, as a link for :func:`append_events` to record."""
    return PseudonymLink(crm_id, keys.pseudonym(crm_id, patient_id), patient_id)


_EVENT_COLUMNS = "event_id, crm_id, event_type, patient_id, created_us, key_id, payload, purposes"
_LINK_COLUMNS = "crm_id, pseudonym, key_id, patient_id, created_us"
_LINK_CONFLICT = " ON CONFLICT (crm_id, pseudonym) DO NOTHING"


def _values(rows: int, columns: int) -> str:
    row = "(" + ", ".join(["%s"] * columns) + ")"
    return ", ".join([row] * rows)


@functools.cache
def _postgres_statement(events: int, links: int) -> str:
    """Links and events of one transaction in one statement, the events after the outbox lock.

    The lock is an InitPlan of the one-time filter, so it is taken when the
    statement starts, before any row (and its ``seq``) is produced.
    """
    link = f"INSERT INTO crm_pseudonym ({_LINK_COLUMNS}) VALUES {_values(links, 5)}{_LINK_CONFLICT}"
    if not events:
        return link
    insert = (
        f"INSERT INTO crm_outbox ({_EVENT_COLUMNS}) SELECT * FROM (VALUES {_values(events, 8)})"
        f" AS v({_EVENT_COLUMNS}) WHERE (SELECT pg_advisory_xact_lock(%s)::text) IS NOT NULL"
    )
    return f"WITH link AS ({link}) {insert}" if links else insert


def append_events(
    conn: Connection,
    keys: KeyStore,
    events: Sequence[PendingEvent],
    links: Iterable[PseudonymLink] = (),
) -> None:
    """Insert sealed events, and record ``links``; on PostgreSQL serialized so ``seq`` is commit order.

    One round trip on PostgreSQL (links, outbox lock and events in one statement).
    """
    link_rows = [
        (link.crm_id, link.pseudonym, link.pseudonym.split(".", 1)[0], link.patient_id, now_us())
        for link in dict.fromkeys(links)
    ]
    if not events and not link_rows:
        return
    now = now_us()
    event_rows = []
    for event in events:
        event_id = str(uuid.uuid4())
        body = {
            "id": event_id,
            "type": event.event_type,
            "occurred_at": format_instant(now),
            "crm": event.crm_id,
            "subject": event.subject,
            "data": event.data,
        }
        kid, sealed = keys.cipher.seal(orjson.dumps(body), event_id.encode())
        purposes = " ".join(event.purposes)
        event_rows.append(
            (event_id, event.crm_id, event.event_type, event.patient_id, now, kid, sealed, purposes)
        )
    cur = driver_cursor(conn)
    try:
        if conn.dialect.name == "postgresql":
            params: list[Any] = [value for row in link_rows for value in row]
            params += [value for row in event_rows for value in row]
            if event_rows:
                params.append(_OUTBOX_LOCK)
            run_on_driver(conn, cur, _postgres_statement(len(event_rows), len(link_rows)), params)
            return
        if link_rows:  # SQLite: writers are serialized by BEGIN IMMEDIATE already
            sql = f"INSERT INTO crm_pseudonym ({_LINK_COLUMNS}) VALUES (?, ?, ?, ?, ?){_LINK_CONFLICT}"
            run_on_driver(conn, cur, sql, link_rows, many=True)
        if event_rows:
            run_on_driver(
                conn,
                cur,
                f"INSERT INTO crm_outbox ({_EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                event_rows,
                many=True,
            )
    finally:
        cur.close()


def purge_withdrawn(conn: Connection, crm_id: str, patient_id: str, remaining: Iterable[str]) -> int:
    """Remove the patient's events for this CRM that no permitted purpose covers any more.

    Why (Law 91/2025/QH15 Art. 9: withdrawal is effective at once): a CRM
    re-reading its feed (or a webhook still behind) must not be served names,
    phones or visits disclosed under a purpose the patient has withdrawn.
    Events bound to no purpose (``consent.changed``, ``patient.merged``, the
    CRM's own booking answers) stay: they carry pseudonyms and codes only.
    Call after :func:`append_events` of the same transaction, so that on SQLite
    a freed ``seq`` is never handed to a newer event.  Returns the rows removed.
    """
    left = set(remaining)
    rows = conn.execute(
        select(crm_outbox.c.seq, crm_outbox.c.purposes).where(
            crm_outbox.c.crm_id == crm_id, crm_outbox.c.patient_id == patient_id, crm_outbox.c.purposes != ""
        )
    ).all()
    gone = [int(seq) for seq, purposes in rows if not left.intersection(str(purposes).split())]
    for start in range(0, len(gone), 500):
        conn.execute(delete(crm_outbox).where(crm_outbox.c.seq.in_(gone[start : start + 500])))
    return len(gone)


def link_pseudonym(conn: Connection, keys: KeyStore, crm_id: str, patient_id: str) -> str:
    """The CRM's current pseudonym for the patient; records the link on first use."""
    link = pseudonym_link(keys, crm_id, patient_id)
    append_events(conn, keys, [], [link])
    return link.pseudonym


def emit_patient_erased(
    conn: Connection,
    keys: KeyStore,
    patient_id: str,
    *,
    retained: Iterable[dict[str, str]] = (),
) -> int:
    """Tell every CRM that ever received the patient to erase it (Law 91/2025 Art. 14).

    Call inside the erasure transaction (issue #6).  ``retained`` lists what
    carebridge keeps and why, e.g. ``{"what": "medical record", "why":
    "Circular 33/2025/TT-BYT retention"}``.  Undelivered and past events of the
    patient are purged from the outbox, then the disclosure state and the
    pseudonym links are removed so the pseudonym no longer resolves.
    Returns the number of CRMs notified.
    """
    rows = conn.execute(
        select(crm_pseudonym.c.crm_id, crm_pseudonym.c.pseudonym).where(
            crm_pseudonym.c.patient_id == patient_id
        )
    ).all()
    by_crm: dict[str, list[str]] = {}
    for crm_id, pseudonym in rows:
        by_crm.setdefault(str(crm_id), []).append(str(pseudonym))
    events = [
        PendingEvent(
            crm_id,
            "patient.erased",
            None,
            keys.pseudonym(crm_id, patient_id),
            {"pseudonyms": sorted(pseudonyms), "retained": list(retained)},
        )
        for crm_id, pseudonyms in sorted(by_crm.items())
    ]
    # Append before purging: on SQLite a rowid freed by the purge could be reused, giving the
    # erasure event a seq that a CRM cursor already passed.  The new events carry no patient
    # id, so the purge below leaves them.
    append_events(conn, keys, events)
    for table in (crm_outbox, crm_disclosure, crm_pseudonym):
        conn.execute(delete(table).where(table.c.patient_id == patient_id))
    return len(events)


def rotate_pseudonyms(conn: Connection, keys: KeyStore, crm_id: str, *, chunk: int = 500) -> int:
    """Rotate the CRM's pseudonym key and deliver the old → new mapping (links are kept).

    Old links stay resolvable (bookings and re-identification accept either).
    Returns the number of patients re-keyed.
    """
    old_kid, new_kid = keys.rotate_pseudonym_key(crm_id)
    rows = conn.execute(
        select(crm_pseudonym.c.patient_id, crm_pseudonym.c.pseudonym).where(
            crm_pseudonym.c.crm_id == crm_id, crm_pseudonym.c.key_id == old_kid
        )
    ).all()
    mappings = []
    for patient_id, old in rows:
        new = link_pseudonym(conn, keys, crm_id, str(patient_id))
        mappings.append({"old": str(old), "new": new})
    events = [
        PendingEvent(
            crm_id,
            "pseudonym.rotated",
            None,
            None,
            {"old_key_id": old_kid, "new_key_id": new_kid, "mappings": mappings[i : i + chunk]},
        )
        for i in range(0, len(mappings), chunk)
    ]
    append_events(conn, keys, events)
    return len(mappings)


def resolve_pseudonym(conn: Connection, crm_id: str, pseudonym: str) -> str | None:
    row = conn.execute(
        select(crm_pseudonym.c.patient_id).where(
            crm_pseudonym.c.crm_id == crm_id, crm_pseudonym.c.pseudonym == pseudonym
        )
    ).first()
    return None if row is None else str(row[0])
