"""The hash-chained, append-only writer of ``audit_event``.

Why (ISO/IEC 27001:2022 A.8.15 logging, A.5.33 protection of records): every
event row carries ``hash = SHA-256(prev_hash || content)`` where ``content`` is
the canonical JSON (orjson, sorted keys) of the AuditEvent, and
``mac = HMAC(key, hash)``.  The chain must stay *linear*: two writers that read
the same head would fork it.  So the head is read under a lock:

* PostgreSQL: ``pg_advisory_xact_lock`` (released at commit/rollback), taken
  before reading the head; the default READ COMMITTED isolation gives the
  next statement a fresh snapshot that sees the previous holder's commit;
* SQLite: a write transaction already holds the database write lock
  (``BEGIN IMMEDIATE``), which serializes appends.

Rows are appended in the caller's transaction, so a change and its audit
record commit or roll back together (no change without its audit record).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

import orjson
from sqlalchemy import Connection, insert, select, text

from audit.checkpoints import AuditKeys, write_checkpoint
from audit.events import index_fields
from audit.schema import audit_event, audit_event_patient

GENESIS: Final = b"\x00" * 32
# pg_advisory_xact_lock key: ASCII "cbaudit\0" (any constant unique to this lock will do)
CHAIN_LOCK_KEY: Final = 0x6362617564697400

_LOCK = text("SELECT pg_advisory_xact_lock(:key)")
_LOCK_ASYNC = text("SELECT pg_advisory_xact_lock(:key), set_config('synchronous_commit', 'off', true)")
_HEAD = select(audit_event.c.seq, audit_event.c.hash).order_by(audit_event.c.seq.desc()).limit(1)
_INSERT = insert(audit_event)
_INSERT_PATIENT = insert(audit_event_patient)


def canonical(event: dict[str, Any]) -> bytes:
    """The bytes that are hashed and stored: compact JSON with sorted keys."""
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: bytes, content: bytes) -> bytes:
    return hashlib.sha256(prev_hash + content).digest()


def lock_chain(conn: Connection, *, durable: bool = True) -> None:
    """Serialize appends (PostgreSQL); SQLite callers must be in a BEGIN IMMEDIATE transaction.

    ``durable=False`` lets this transaction commit without waiting for the WAL
    flush (``synchronous_commit=off``): used for access events, see
    :class:`ChainWriter`.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK if durable else _LOCK_ASYNC, {"key": CHAIN_LOCK_KEY})


def head(conn: Connection) -> tuple[int, bytes]:
    row = conn.execute(_HEAD).first()
    return (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))


def row_values(
    seq: int, event: dict[str, Any], content: bytes, prev: bytes, digest: bytes
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Column values of one row and its patients (the verifier recomputes both)."""
    idx = index_fields(event)
    values = {
        "seq": seq,
        "event_id": idx.event_id,
        "recorded_us": idx.recorded_us,
        "action": idx.action,
        "type": idx.type,
        "subtype": idx.subtype,
        "outcome": idx.outcome,
        "agent": idx.agent,
        "patient_id": idx.patient_ids[0] if idx.patient_ids else None,
        "entity": idx.entity,
        "purpose": idx.purpose,
        "request_id": idx.request_id,
        "content": content,
        "prev_hash": prev,
        "hash": digest,
    }
    return values, idx.patient_ids


class ChainWriter:
    """Appends AuditEvents to the chain; signs a checkpoint every ``checkpoint_every`` events.

    ``durable_reads=False`` (default) commits transactions whose only write is
    an access event with ``synchronous_commit=off`` on PostgreSQL: a read stays
    a read in cost (no WAL flush wait), at the price that a server crash can
    lose the access records of the last few hundred milliseconds -- never a
    change's record, never the chain's integrity (WAL replays a prefix).
    """

    def __init__(self, keys: AuditKeys, *, checkpoint_every: int = 1000, durable_reads: bool = False) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be >= 1")
        self.keys = keys
        self.checkpoint_every = checkpoint_every
        self.durable_reads = durable_reads

    def append(self, conn: Connection, events: Sequence[dict[str, Any]], *, access: bool = False) -> int:
        """Append ``events`` in order on ``conn``'s transaction; returns the last seq."""
        if not events:
            return head(conn)[0]
        lock_chain(conn, durable=self.durable_reads or not access)
        first_seq, prev = head(conn)
        seq = first_seq
        rows: list[dict[str, Any]] = []
        links: list[dict[str, Any]] = []
        for event in events:
            seq += 1
            content = canonical(event)
            digest = chain_hash(prev, content)
            values, patients = row_values(seq, event, content, prev, digest)
            values["mac"] = self.keys.mac(digest)
            rows.append(values)
            if len(patients) > 1:
                links.extend({"seq": seq, "patient_id": pid} for pid in patients)
            prev = digest
        conn.execute(_INSERT, rows)
        if links:
            conn.execute(_INSERT_PATIENT, links)
        if seq // self.checkpoint_every != first_seq // self.checkpoint_every:
            write_checkpoint(conn, self.keys, seq, prev)
        return seq
