"""The HL7 v2 message journal (table ``hl7_journal``): commit first, acknowledge second.

Why a journal: HL7 v2 "original mode" and enhanced-mode commit ACKs
(HL7 v2.5 ch. 2.9.2-2.9.3) promise the sender that a message acknowledged is
safely held by the receiver.  So the raw bytes of every message -- good, bad or
unparseable -- are committed here *before* any ACK leaves the process, and
the ACK itself is stored with the row so that a duplicate delivery is
answered with the very bytes sent the first time.

A duplicate delivery is the same sender (MSH-3, MSH-4), the same MSH-10 *and*
the same content (HL7 v2.5 ch. 2.10.1 "sequence number protocol" spirit):
senders reuse control ids (counters reset on restart, fixed values), so the
key alone would answer a new message with another message's ACK and drop it.
The content is compared as ``digest``: an HMAC under the store's blind-index
key (:meth:`~fhir_store.content_cipher.StoreCipher.journal_digests`) of the
canonical content the caller passes (the gateway leaves MSH-7 out: senders
restamp on retry).  Keyed, because the content is patient data and a bare
hash would let a database copy confirm a guessed message.  The same key with
other content is a row of its own, flagged ``control_id_reused``; rows
journaled before digests existed (``""``) keep answering their key.

Row lifecycle (``status``)::

    processed  inserted in the store transaction that applies the message (ack AA)
    failed     written in one step when the message cannot be applied (ack AE)
    rejected   written in one step: unparseable, unsupported, not allowed (ack AR)
    ignored    written in one step: accepted, nothing to apply; ``error`` holds why (ack AA)
    stale      applied in the store transaction, but older than the state of at least one
               resource it would set, which was left as it was; ``error`` names the newer
               event (ack AA; ``fhir_store.event_order``)
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

from sqlalchemy import ColumnElement, Connection, Engine, delete, func, or_, select, update

from fhir_store.content_cipher import StoreCipher
from fhir_store.database import writer
from fhir_store.driver_sql import DriverQuery
from fhir_store.instants import now_us
from fhir_store.schema import hl7_journal

RECEIVED = "received"
PROCESSED = "processed"
FAILED = "failed"
REJECTED = "rejected"
IGNORED = "ignored"
STALE = "stale"
FINAL_STATUSES = frozenset({PROCESSED, FAILED, REJECTED, IGNORED, STALE})

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
    control_id_reused: bool = False


@dataclass(frozen=True, slots=True)
class Inserted:
    """A new journal row, and whether its sender + MSH-10 was journaled before with other content."""

    id: int
    reused: bool


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
    _j.c.control_id_reused,
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
    return replace(entry, raw=raw, control_id_reused=bool(entry.control_id_reused))


def _clip(value: str, size: int) -> str:
    """A text column's value: NUL replaced (PostgreSQL text cannot hold it; SQLite would), clipped.

    The message's own bytes are kept unchanged in the sealed ``raw`` column; the text
    columns only describe it, so both backends store and compare the same description.
    """
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    return value if len(value) <= size else value[:size]


_INSERT = DriverQuery(
    "INSERT INTO hl7_journal (received_us, peer, sending_application, sending_facility, control_id,"
    " message_type, raw, status, ack_code, ack, error, processed_us, attempts, digest, control_id_reused)"
    " VALUES (:received_us, :peer, :sending_application, :sending_facility, :control_id,"
    " :message_type, :raw, :status, :ack_code, :ack, :error, :processed_us, :attempts, :digest,"
    " EXISTS (SELECT 1 FROM hl7_journal WHERE sending_application = :sending_application"
    " AND sending_facility = :sending_facility AND control_id = :control_id"
    " AND digest <> :digest AND substr(digest, 1, 1) <> '~') AND substr(:digest, 1, 1) <> '~')"
    " ON CONFLICT (sending_application, sending_facility, control_id, digest) DO NOTHING"
    " RETURNING id, control_id_reused"
)


def _older_match(conn: Connection, app: str, fac: str, control: str, digests: Sequence[str]) -> bool:
    """A row of this key whose digest is a legacy "" or this content under an older blind key."""
    stmt = select(_j.c.id).where(
        _j.c.sending_application == app,
        _j.c.sending_facility == fac,
        _j.c.control_id == control,
        _j.c.digest.in_(["", *digests]),
    )
    return conn.execute(stmt.limit(1)).first() is not None


def insert_entry(
    conn: Connection,
    *,
    raw: bytes,
    peer: str,
    sending_application: str,
    sending_facility: str,
    control_id: str,
    message_type: str,
    content: bytes | None = None,
    dedup: bool = True,
    status: str = RECEIVED,
    ack_code: str | None = None,
    ack: bytes | None = None,
    error: str | None = None,
    cipher: StoreCipher,
) -> Inserted | None:
    """Insert one row in the caller's transaction; None if it is a duplicate delivery.

    ``content`` is the canonical message content the duplicate check compares (None:
    unknown, so any earlier row of the key is a duplicate, as before digests existed);
    ``dedup=False`` gives the row a surrogate digest that nothing ever matches (a refused
    sender's attempt must not be answered from another connection's row).  An empty
    ``control_id`` is replaced by :func:`surrogate_control_id` (no dedup possible).
    Rows inserted in a final status carry their ACK already.  The HL7 ingest writes
    the row of an applied message in the store transaction that applies it (one commit:
    the row and the message's effects become durable together, before the ACK leaves).
    """
    now = now_us()
    final = status in FINAL_STATUSES
    app, fac = _clip(sending_application, 180), _clip(sending_facility, 180)
    control = _clip(control_id, 199) if control_id else surrogate_control_id()
    if not dedup:
        digests = ["~" + uuid.uuid4().hex]
    elif content is None:
        digests = [""]
    else:
        digests = cipher.journal_digests(content)
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
            "error": None if error is None else _clip(error, len(error)),
            "processed_us": now if final else None,
            "attempts": 1 if final else 0,
            "digest": digests[0],
        },
    )
    if row is None:
        return None
    inserted = Inserted(int(row[0]), bool(row[1]))
    if inserted.reused and digests[0] and _older_match(conn, app, fac, control, digests[1:]):
        # the same content journaled before digests or under an older blind key: a duplicate
        conn.execute(delete(_j).where(_j.c.id == inserted.id))
        return None
    return inserted


def insert_row(conn: Connection, **row: Any) -> int | None:
    """:func:`insert_entry` (same keywords), returning only the new row's id."""
    inserted = insert_entry(conn, **row)
    return None if inserted is None else inserted.id


def insert_message_entry(engine: Engine, **row: Any) -> Inserted | None:
    """:func:`insert_entry` (same keywords) in a transaction of its own, COMMITted before returning."""
    with _begin(engine) as conn, conn.begin():
        return insert_entry(conn, **row)


def insert_message(engine: Engine, **row: Any) -> int | None:
    """:func:`insert_row` (same keywords) in a transaction of its own, COMMITted before returning."""
    inserted = insert_message_entry(engine, **row)
    return None if inserted is None else inserted.id


def find_duplicate(
    engine: Engine,
    sending_application: str,
    sending_facility: str,
    control_id: str,
    cipher: StoreCipher,
    content: bytes | None = None,
) -> JournalEntry | None:
    """The earlier row for the same sender, MSH-10 and (when given) content, if any.

    Without ``content`` any row of the key matches (the earliest); with it, a row of the
    same content under any blind key, or a row journaled before digests existed.
    """
    stmt = select(*_COLUMNS).where(
        _j.c.sending_application == _clip(sending_application, 180),
        _j.c.sending_facility == _clip(sending_facility, 180),
        _j.c.control_id == _clip(control_id, 199),
    )
    if content is not None:
        stmt = stmt.where(_j.c.digest.in_(["", *cipher.journal_digests(content)]))
    with engine.connect() as conn:
        row = conn.execute(stmt.order_by(_j.c.id).limit(1)).first()
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


def mark_stale(conn: Connection, journal_id: int, note: str) -> None:
    """Inside the store transaction, after the writes: some were held back as older (``note`` says which)."""
    conn.execute(update(_j).where(_j.c.id == journal_id).values(status=STALE, error=_clip(note, len(note))))


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
                error=_clip(error, len(error)),
                processed_us=now_us(),
                attempts=_j.c.attempts + 1,
            )
        )


def mark_retryable(engine: Engine, journal_id: int, error: str) -> None:
    """Record an attempt that failed for an environmental reason: the row stays ``received``.

    No ACK is stored, so the sender's resend (or ``carebridge hl7 replay``) applies
    the message once the database is healthy (issue #17); ``error`` says why it waits.
    """
    with _begin(engine) as conn, conn.begin():
        conn.execute(
            update(_j)
            .where(_j.c.id == journal_id, _j.c.status == RECEIVED)
            .values(error=_clip(error, len(error)), attempts=_j.c.attempts + 1)
        )


def oldest_received_us(conn: Connection) -> int | None:
    """When the oldest message still waiting (``received``) arrived: the backlog readiness checks."""
    value = conn.execute(select(func.min(_j.c.received_us)).where(_j.c.status == RECEIVED)).scalar()
    return None if value is None else int(value)


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
