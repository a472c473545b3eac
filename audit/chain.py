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
_HEAD = select(audit_event.c.seq, audit_event.c.hash).order_by(audit_event.c.seq.desc()).limit(1)
_INSERT = insert(audit_event)
_INSERT_PATIENT = insert(audit_event_patient)


def canonical(event: dict[str, Any]) -> bytes:
    """The bytes that are hashed and stored: compact JSON with sorted keys."""
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


def chain_hash(prev_hash: bytes, content: bytes) -> bytes:
    return hashlib.sha256(prev_hash + content).digest()


def lock_chain(conn: Connection) -> None:
    """Serialize appends (PostgreSQL); SQLite callers must be in a BEGIN IMMEDIATE transaction."""
    if conn.dialect.name == "postgresql":
        conn.execute(_LOCK, {"key": CHAIN_LOCK_KEY})


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
    """Appends AuditEvents to the chain; signs a checkpoint every ``checkpoint_every`` events."""

    def __init__(self, keys: AuditKeys, *, checkpoint_every: int = 1000) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be >= 1")
        self.keys = keys
        self.checkpoint_every = checkpoint_every

    def append(self, conn: Connection, events: Sequence[dict[str, Any]]) -> int:
        """Append ``events`` in order on ``conn``'s transaction; returns the last seq."""
        if not events:
            return head(conn)[0]
        # serialize and index before taking the lock: the locked section stays short
        prepared = []
        for event in events:
            content = canonical(event)
            prepared.append((content, *row_values(0, event, content, b"", b"")))
        lock_chain(conn)
        first_seq, prev = head(conn)
        seq = first_seq
        rows: list[dict[str, Any]] = []
        links: list[dict[str, Any]] = []
        for content, values, patients in prepared:
            seq += 1
            digest = chain_hash(prev, content)
            values.update(seq=seq, prev_hash=prev, hash=digest, mac=self.keys.mac(digest))
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
