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

The lock, the head read and the inserts run on the DB-API cursor of the
caller's connection (:mod:`audit.chain_sql`, measured there).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Connection

from audit.chain_sql import GENESIS as GENESIS  # re-exported: the verifier starts from it
from audit.chain_sql import PairInsert, RowInsert, head, lock_and_head
from audit.chain_sql import lock_chain as lock_chain  # re-exported: on-demand checkpoints take it
from audit.checkpoints import AuditKeys, write_checkpoint
from audit.rows import COLUMNS, Prepared, event_keys, prepare
from audit.schema import audit_event, audit_event_key
from fhir_store import driver_cursor

_INSERT = PairInsert(RowInsert(audit_event, COLUMNS), RowInsert(audit_event_key, ("seq", "key", "patient")))
_ENTITY = COLUMNS.index("entity") - 1  # in Prepared.columns, which start at event_id


_HEAD_HELD = "carebridge_audit_head_held"


def _held_head(conn: Connection) -> tuple[int, bytes] | None:
    """The head this transaction appended last, while it still holds the chain lock; else None.

    Why: one HL7 message appends twice in its transaction on PostgreSQL (the
    change's import event, then the CRM bridge's consent decisions).  The
    advisory lock taken by the first append is held until commit, so nobody
    else can have moved the head: the second append skips the lock-and-head
    round trip.  Keyed by the transaction object (kept referenced here, so
    its identity cannot be reused); a new or ended transaction reads the head.
    """
    held = conn.info.get(_HEAD_HELD)
    transaction = conn.get_transaction()
    if held is None or transaction is None or held[0] is not transaction or not transaction.is_active:
        return None
    return int(held[1]), bytes(held[2])


def chain_hash(prev_hash: bytes, content: bytes) -> bytes:
    return hashlib.sha256(prev_hash + content).digest()


class ChainWriter:
    """Appends AuditEvents to the chain; signs a checkpoint every ``checkpoint_every`` events."""

    def __init__(self, keys: AuditKeys, *, checkpoint_every: int = 1000) -> None:
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be >= 1")
        self.keys = keys
        self.checkpoint_every = checkpoint_every
        # told after every append (audit.checkpointer: time-based checkpoints and anchors)
        self.on_append: Callable[[], None] | None = None

    def append(self, conn: Connection, events: Sequence[dict[str, Any]]) -> int:
        """Append event dicts in order on ``conn``'s transaction; returns the last seq."""
        return self.append_prepared(conn, [prepare(event) for event in events])

    def append_prepared(self, conn: Connection, events: Sequence[Prepared]) -> int:
        """Append rendered events (:mod:`audit.rows`) in order; returns the last seq.

        Everything but the chain link is computed before the lock is taken
        (serialization, index columns), so the locked section is the head
        read, one SHA-256 and one HMAC per event, and the inserts.
        """
        if not events:
            return head(conn)[0]
        dialect = conn.dialect.name
        cur = driver_cursor(conn)
        try:
            held = _held_head(conn) if dialect == "postgresql" else None
            first_seq, prev = lock_and_head(cur, dialect) if held is None else held
            seq = first_seq
            mac = self.keys.mac
            sha256 = hashlib.sha256
            rows: list[tuple[Any, ...]] = []
            keys: list[tuple[int, str, bool]] = []
            for content, columns, patients in events:
                seq += 1
                digest = sha256(prev + content).digest()
                rows.append((seq, *columns, content, prev, digest, mac(digest)))
                for key, is_patient in event_keys(columns[_ENTITY], patients):
                    keys.append((seq, key, is_patient))
                prev = digest
            _INSERT.write(cur, dialect, rows, keys)
        finally:
            cur.close()
        if dialect == "postgresql":
            conn.info[_HEAD_HELD] = (conn.get_transaction(), seq, prev)
        if seq // self.checkpoint_every != first_seq // self.checkpoint_every:
            write_checkpoint(conn, self.keys, seq, prev)
        if self.on_append is not None:
            self.on_append()
        return seq
