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

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, delete, insert, select, text

from consent.keys import KeyStore
from crm_bridge.schema import crm_disclosure, crm_outbox, crm_pseudonym
from fhir_store.instants import format_instant, now_us

_OUTBOX_LOCK = 0x43524D31  # pg_advisory_xact_lock key ("CRM1")


@dataclass(frozen=True)
class PendingEvent:
    crm_id: str
    event_type: str
    patient_id: str | None
    subject: str | None
    data: dict[str, Any]


def append_events(conn: Connection, keys: KeyStore, events: Sequence[PendingEvent]) -> None:
    """Insert sealed events; on PostgreSQL serialized so ``seq`` order is commit order."""
    if not events:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _OUTBOX_LOCK})
    now = now_us()
    rows = []
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
        rows.append(
            {
                "event_id": event_id,
                "crm_id": event.crm_id,
                "event_type": event.event_type,
                "patient_id": event.patient_id,
                "created_us": now,
                "key_id": kid,
                "payload": sealed,
            }
        )
    conn.execute(insert(crm_outbox), rows)


def link_pseudonym(conn: Connection, keys: KeyStore, crm_id: str, patient_id: str) -> str:
    """The CRM's current pseudonym for the patient; records the link on first use."""
    pseudonym = keys.pseudonym(crm_id, patient_id)
    found = conn.execute(
        select(crm_pseudonym.c.patient_id).where(
            crm_pseudonym.c.crm_id == crm_id, crm_pseudonym.c.pseudonym == pseudonym
        )
    ).first()
    if found is None:
        conn.execute(
            insert(crm_pseudonym).values(
                crm_id=crm_id,
                pseudonym=pseudonym,
                key_id=pseudonym.split(".", 1)[0],
                patient_id=patient_id,
                created_us=now_us(),
            )
        )
    return pseudonym


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
