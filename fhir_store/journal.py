"""The HL7 v2 message journal (table ``hl7_journal``): commit first, acknowledge second.

Why a journal: HL7 v2 "original mode" and enhanced-mode commit ACKs
(HL7 v2.5 ch. 2.9.2-2.9.3) promise the sender that a message acknowledged is
safely held by the receiver.  So the raw bytes of every message -- good, bad or
unparseable -- are committed here *before* any ACK leaves the process, and
the ACK itself is stored with the row so that a duplicate delivery (same
MSH-3/MSH-4/MSH-10, HL7 v2.5 ch. 2.10.1 "sequence number protocol" spirit)
is answered with the very bytes sent the first time.

Row lifecycle (``status``)::

    processed  inserted in the store transaction that applies the message (ack AA)
    failed     written in one step when the message cannot be applied (ack AE)
    rejected   written in one step: unparseable, unsupported, not allowed (ack AR)
    received --(store transaction)--> processed | failed
               only when the sender asked for an enhanced-mode commit ACK, which
               must follow the journal commit and precede the work

A row left ``received`` means the process died between the journal commit and
the end of processing: the sender's retry or ``carebridge hl7 replay``
completes it.  This module only reads and writes rows; it knows nothing of
HL7 parsing.

``raw`` holds the PID segment (CCCD, BHYT, phone): it is sealed with the
store's :class:`~fhir_store.content_cipher.StoreCipher`, bound to sender and
control id (the duplicate-detection key, kept in clear), and opened by every
reader here; rows journaled before encryption stay readable.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, func, or_, select, update

from fhir_store.content_cipher import StoreCipher
from fhir_store.database import writer
from fhir_store.driver_sql import DriverQuery
from fhir_store.instants import now_us
from fhir_store.schema import hl7_journal

RECEIVED = "received"
PROCESSED = "processed"
FAILED = "failed"
REJECTED = "rejected"
FINAL_STATUSES = frozenset({PROCESSED, FAILED, REJECTED})

_j = hl7_journal


@dataclass(frozen=True, slots=True)
class JournalEntry:
    id: int
    received_us: int
    peer: str
    sending_application: str
    sending_facility: str
    control_id: str
    message_type: str
    raw: bytes
    status: str
    ack_code: str | None
    ack: bytes | None
    error: str | None
    processed_us: int | None
    attempts: int


_COLUMNS = (
    _j.c.id,
    _j.c.received_us,
    _j.c.peer,
    _j.c.sending_application,
    _j.c.sending_facility,
    _j.c.control_id,
    _j.c.message_type,
    _j.c.raw,
    _j.c.status,
    _j.c.ack_code,
    _j.c.ack,
    _j.c.error,
    _j.c.processed_us,
    _j.c.attempts,
)


def surrogate_control_id() -> str:
    """A unique stand-in for a missing MSH-10 ("~" never starts a real control id we dedup on)."""
    return "~" + uuid.uuid4().hex


def _begin(engine: Engine) -> Connection:
    """A write transaction; on SQLite take the write lock at BEGIN (see fhir_store.database)."""
    return writer(engine).connect()


def _entry(row: Sequence[object], cipher: StoreCipher) -> JournalEntry:
    entry = JournalEntry(*row)  # type: ignore[arg-type]
    raw = cipher.open_journal(
        entry.sending_application, entry.sending_facility, entry.control_id, bytes(entry.raw)
    )
    return replace(entry, raw=raw)


def _clip(value: str, size: int) -> str:
    return value if len(value) <= size else value[:size]


_INSERT = DriverQuery(
    "INSERT INTO hl7_journal (received_us, peer, sending_application, sending_facility, control_id,"
    " message_type, raw, status, ack_code, ack, error, processed_us, attempts)"
    " VALUES (:received_us, :peer, :sending_application, :sending_facility, :control_id,"
    " :message_type, :raw, :status, :ack_code, :ack, :error, :processed_us, :attempts)"
    " ON CONFLICT (sending_application, sending_facility, control_id) DO NOTHING RETURNING id"
)


def insert_row(
    conn: Connection,
    *,
    raw: bytes,
    peer: str,
    sending_application: str,
    sending_facility: str,
    control_id: str,
    message_type: str,
    status: str = RECEIVED,
    ack_code: str | None = None,
    ack: bytes | None = None,
    error: str | None = None,
    cipher: StoreCipher,
) -> int | None:
    """Insert one row in the caller's transaction; None if the sender+control id already exists.

    An empty ``control_id`` is replaced by :func:`surrogate_control_id` (no dedup possible).
    Rows inserted in a final status carry their ACK already.  The HL7 ingest writes
    the row of an applied message in the store transaction that applies it (one commit:
    the row and the message's effects become durable together, before the ACK leaves).
    """
    now = now_us()
    final = status in FINAL_STATUSES
    app, fac = _clip(sending_application, 180), _clip(sending_facility, 180)
    control = _clip(control_id, 199) if control_id else surrogate_control_id()
    row = _INSERT.first(
        conn,
        {
            "received_us": now,
            "peer": _clip(peer, 100),
            "sending_application": app,
            "sending_facility": fac,
            "control_id": control,
            "message_type": _clip(message_type, 40),
            "raw": cipher.seal_journal(app, fac, control, raw),
            "status": status,
            "ack_code": ack_code,
            "ack": ack,
            "error": error,
            "processed_us": now if final else None,
            "attempts": 1 if final else 0,
        },
    )
    return None if row is None else int(row[0])


def insert_message(engine: Engine, **row: Any) -> int | None:
    """:func:`insert_row` (same keywords) in a transaction of its own, COMMITted before returning."""
    with _begin(engine) as conn, conn.begin():
        return insert_row(conn, **row)


def find_duplicate(
    engine: Engine, sending_application: str, sending_facility: str, control_id: str, cipher: StoreCipher
) -> JournalEntry | None:
    """The earlier row for the same sender and MSH-10, if any."""
    stmt = select(*_COLUMNS).where(
        _j.c.sending_application == _clip(sending_application, 180),
        _j.c.sending_facility == _clip(sending_facility, 180),
        _j.c.control_id == _clip(control_id, 199),
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    return None if row is None else _entry(row, cipher)


def load(engine: Engine, journal_id: int, cipher: StoreCipher) -> JournalEntry | None:
    with engine.connect() as conn:
        row = conn.execute(select(*_COLUMNS).where(_j.c.id == journal_id)).first()
    return None if row is None else _entry(row, cipher)


def mark_processed(conn: Connection, journal_id: int, ack_code: str, ack: bytes) -> None:
    """Run inside the store transaction (``transact(extra=...)``): effects and status commit together."""
    conn.execute(
        update(_j)
        .where(_j.c.id == journal_id)
        .values(
            status=PROCESSED,
            ack_code=ack_code,
            ack=ack,
            error=None,
            processed_us=now_us(),
            attempts=_j.c.attempts + 1,
        )
    )


def mark_failed(
    engine: Engine, journal_id: int, *, status: str, ack_code: str, ack: bytes, error: str
) -> None:
    """Record a failed attempt (own transaction: the store transaction was rolled back)."""
    with _begin(engine) as conn, conn.begin():
        conn.execute(
            update(_j)
            .where(_j.c.id == journal_id)
            .values(
                status=status,
                ack_code=ack_code,
                ack=ack,
                error=error,
                processed_us=now_us(),
                attempts=_j.c.attempts + 1,
            )
        )


def list_to_replay(engine: Engine, *, stale_before_us: int | None = None) -> list[int]:
    """Ids of failed/rejected rows, plus ``received`` rows older than ``stale_before_us``, oldest first."""
    condition: ColumnElement[bool] = _j.c.status.in_((FAILED, REJECTED))
    if stale_before_us is not None:
        condition = or_(condition, (_j.c.status == RECEIVED) & (_j.c.received_us < stale_before_us))
    with engine.connect() as conn:
        return [int(r[0]) for r in conn.execute(select(_j.c.id).where(condition).order_by(_j.c.id))]


def count_by_status(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(select(_j.c.status, func.count()).group_by(_j.c.status)).all()
    return {str(r[0]): int(r[1]) for r in rows}


OPEN_STATUSES = (RECEIVED, FAILED, REJECTED)


def open_counts(conn: Connection) -> dict[str, tuple[int, int | None]]:
    """``(rows, oldest received_us)`` per status not applied (received, failed, rejected).

    For the operations metrics (``gateway.metrics``): the backlog and the oldest
    waiting message; processed rows are history and are not counted.
    """
    rows = conn.execute(
        select(_j.c.status, func.count(), func.min(_j.c.received_us))
        .where(_j.c.status.in_(OPEN_STATUSES))
        .group_by(_j.c.status)
    ).all()
    return {str(r[0]): (int(r[1]), r[2]) for r in rows}
