"""Recompute the audit chain and its checkpoints; name the first bad event.

Why (ISO/IEC 27001:2022 A.5.33, A.8.15): tamper *evidence* is only as good as
its check.  For every row, in ``seq`` order, the verifier checks that

1. ``seq`` is the next integer (a gap = a deleted row);
2. ``prev_hash`` is the previous row's hash (deleted, inserted, reordered);
3. ``hash = SHA-256(prev_hash || content)`` (edited content);
4. ``mac = HMAC(key, hash)`` when the key file is available (a forged row whose
   hash an attacker recomputed);
5. the search columns and patient links equal what ``content`` says (an edited
   index column, e.g. a patient id changed to hide an access);

and for every checkpoint that its Ed25519 signature is valid under a trusted
public key and that it signs the recomputed hash at its ``seq``; a checkpoint
beyond the last row means the tail was deleted.
"""

from __future__ import annotations

import hmac
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, select

from audit.chain import GENESIS, chain_hash
from audit.checkpoints import AuditKeys, VerifyKey
from audit.rows import row_values
from audit.schema import audit_checkpoint, audit_event, audit_event_patient

BATCH = 2000
_COLUMNS = (
    "event_id",
    "recorded_us",
    "action",
    "type",
    "subtype",
    "outcome",
    "agent",
    "patient_id",
    "entity",
    "purpose",
    "request_id",
)


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int
    checkpoints: int
    bad_seq: int | None = None
    bad_event_id: str | None = None
    reason: str | None = None

    def line(self) -> str:
        if self.ok:
            return f"ok {self.events} events"
        event = f" event {self.bad_event_id}" if self.bad_event_id else ""
        return f"bad seq {self.bad_seq}{event}: {self.reason}"


def _rows(conn: Connection) -> Iterator[Any]:
    """All rows in seq order, in key-set pages (constant memory, works on both backends)."""
    after = -1
    while True:
        rows = conn.execute(
            select(audit_event).where(audit_event.c.seq > after).order_by(audit_event.c.seq).limit(BATCH)
        ).all()
        if not rows:
            return
        yield from rows
        after = int(rows[-1].seq)


def _links(conn: Connection) -> dict[int, set[str]]:
    links: dict[int, set[str]] = defaultdict(set)
    for seq, pid in conn.execute(select(audit_event_patient.c.seq, audit_event_patient.c.patient_id)):
        links[int(seq)].add(str(pid))
    return links


def _check_row(row: Any, prev: bytes, keys: AuditKeys | None, links: dict[int, set[str]]) -> str | None:
    """The reason this row is bad, or None."""
    content = bytes(row.content)
    if bytes(row.prev_hash) != prev:
        return "prev_hash does not link to the previous event (deleted, inserted or reordered)"
    digest = chain_hash(prev, content)
    if bytes(row.hash) != digest:
        return "hash does not match content (edited)"
    if keys is not None and not hmac.compare_digest(bytes(row.mac), keys.mac(digest)):
        return "MAC invalid (forged or re-hashed event)"
    try:
        event = orjson.loads(content)
        expected, patients = row_values(int(row.seq), event, content, prev, digest)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, IndexError, AttributeError):
        return "content is not a valid AuditEvent"
    for column in _COLUMNS:
        if getattr(row, column) != expected[column]:
            return f"column {column} does not match content (edited)"
    want_links = set(patients) if len(patients) > 1 else set()
    if links.get(int(row.seq), set()) != want_links:
        return "patient links do not match content (edited)"
    return None


def verify_chain(
    conn: Connection, keys: AuditKeys | None = None, trusted: list[VerifyKey] | None = None
) -> VerifyResult:
    """Check everything; ``keys`` (the key file) enables MAC checks and trusts its public key.

    Without any trusted key, checkpoints cannot be checked and count as bad.
    """
    trusted_keys = {k.key_id: k for k in (trusted or [])}
    if keys is not None:
        trusted_keys.setdefault(keys.key_id, keys.verify_key)
    checkpoints = {int(r.seq): r for r in conn.execute(select(audit_checkpoint)).all()}
    links = _links(conn)
    prev, expected_seq, count = GENESIS, 1, 0
    for row in _rows(conn):
        seq = int(row.seq)
        event_id = str(row.event_id)
        if seq != expected_seq:
            return VerifyResult(
                False, count, len(checkpoints), seq, event_id, f"expected seq {expected_seq} (deleted event)"
            )
        reason = _check_row(row, prev, keys, links)
        if reason is not None:
            return VerifyResult(False, count, len(checkpoints), seq, event_id, reason)
        prev = bytes(row.hash)
        checkpoint = checkpoints.get(seq)
        if checkpoint is not None:
            reason = _check_checkpoint(checkpoint, prev, trusted_keys)
            if reason is not None:
                return VerifyResult(False, count, len(checkpoints), seq, event_id, reason)
        count += 1
        expected_seq += 1
    beyond = [s for s in checkpoints if s >= expected_seq]
    if beyond:
        return VerifyResult(
            False,
            count,
            len(checkpoints),
            expected_seq,
            None,
            f"missing: checkpoint at seq {min(beyond)} covers events after seq {count} (deleted)",
        )
    return VerifyResult(True, count, len(checkpoints))


def _check_checkpoint(checkpoint: Any, chain_head: bytes, trusted: dict[str, VerifyKey]) -> str | None:
    seq = int(checkpoint.seq)
    if bytes(checkpoint.hash) != chain_head:
        return f"checkpoint at seq {seq} signs a different chain (events up to here were altered)"
    key = trusted.get(str(checkpoint.key_id))
    if key is None:
        return f"checkpoint at seq {seq} is signed by an untrusted key {checkpoint.key_id}"
    if not key.check(seq, chain_head, int(checkpoint.created_us), bytes(checkpoint.signature)):
        return f"checkpoint at seq {seq} has an invalid signature"
    return None


def verify_engine(
    engine: Engine, keys: AuditKeys | None = None, trusted: list[VerifyKey] | None = None
) -> VerifyResult:
    """Run :func:`verify_chain` in one read transaction (a consistent snapshot on PostgreSQL)."""
    options: dict[str, Any] = {}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    with engine.connect().execution_options(**options) as conn, conn.begin():
        return verify_chain(conn, keys, trusted)
