"""Recompute the audit chain and its checkpoints; name the first bad event.

Why (ISO/IEC 27001:2022 A.5.33, A.8.15): tamper *evidence* is only as good as
its check.  For every row, in ``seq`` order, the verifier checks that

1. ``seq`` is the next integer (a gap = a deleted row);
2. ``prev_hash`` is the previous row's hash (deleted, inserted, reordered);
3. ``hash = SHA-256(prev_hash || content)`` (edited content);
4. ``mac = HMAC(key, hash)`` when the key file is available (a forged row whose
   hash an attacker recomputed);
5. the search columns and the event's ``audit_event_key`` rows equal what
   ``content`` says (an edited index column or key row, e.g. a patient id
   changed or removed to hide an access); key rows of no event are reported
   too;

and for every checkpoint that its Ed25519 signature is valid under a trusted
public key and that it signs the recomputed hash at its ``seq``; a checkpoint
beyond the last row means the tail was deleted.

With anchors (:mod:`audit.anchors`, ``verify --anchors FILE``) the same holds
for the copies kept outside the database: each anchor's signature must be
valid under a trusted key, the event at its ``seq`` must exist and the
recomputed chain must reach the anchored hash there.  So deleting the tail,
deleting everything (checkpoints included) or rewriting anchored rows -- even
with recomputed hashes and MACs -- fails; events after the newest anchor are
reported as unanchored (what a database writer could still have changed).
"""

from __future__ import annotations

import hmac
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, Engine, func, or_, select

from audit.anchors import Anchor
from audit.chain import GENESIS, chain_hash
from audit.checkpoints import AuditKeys, VerifyKey
from audit.rows import INDEX_COLUMNS, event_keys, row_values
from audit.schema import audit_checkpoint, audit_event, audit_event_key

BATCH = 2000


@dataclass(frozen=True)
class VerifyResult:
    ok: bool
    events: int
    checkpoints: int
    bad_seq: int | None = None
    bad_event_id: str | None = None
    reason: str | None = None
    anchored_seq: int | None = None  # the newest anchor's seq (None: verified without anchors)

    @property
    def unanchored(self) -> int:
        """Events after the newest anchor: not protected against a database writer."""
        return self.events - (self.anchored_seq or 0)

    def anchor_line(self) -> str:
        if not self.anchored_seq:
            return f"unanchored {self.unanchored} events (no anchor)"
        return f"unanchored {self.unanchored} events after seq {self.anchored_seq} (newest anchor)"

    def line(self) -> str:
        if self.ok:
            return f"ok {self.events} events"
        event = f" event {self.bad_event_id}" if self.bad_event_id else ""
        return f"bad seq {self.bad_seq}{event}: {self.reason}"


Keys = dict[str, bool]


def _rows(conn: Connection) -> Iterator[tuple[Any, Keys]]:
    """All rows in seq order with their key rows, in key-set pages (constant memory, both backends)."""
    after = -1
    while True:
        rows = conn.execute(
            select(audit_event).where(audit_event.c.seq > after).order_by(audit_event.c.seq).limit(BATCH)
        ).all()
        if not rows:
            return
        last = int(rows[-1].seq)
        found: dict[int, Keys] = defaultdict(dict)
        k = audit_event_key.c
        for seq, key, patient in conn.execute(
            select(k.seq, k.key, k.patient).where(k.seq > after, k.seq <= last)  # primary key range
        ):
            found[int(seq)][str(key)] = bool(patient)
        for row in rows:
            yield row, found.get(int(row.seq), {})
        after = last


def _stray_key(conn: Connection, last_seq: int) -> int | None:
    """The seq of a key row outside the chain (added to point a search at a missing event)."""
    k = audit_event_key.c
    return conn.execute(select(func.min(k.seq)).where(or_(k.seq < 1, k.seq > last_seq))).scalar()


def _check_row(row: Any, prev: bytes, keys: AuditKeys | None, stored_keys: Keys) -> str | None:
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
    for column in INDEX_COLUMNS:
        if getattr(row, column) != expected[column]:
            return f"column {column} does not match content (edited)"
    if dict(event_keys(expected["entity"], patients)) != stored_keys:
        return "search keys (audit_event_key) do not match content (edited)"
    return None


def _anchor_map(
    anchors: Sequence[Anchor], trusted: dict[str, VerifyKey]
) -> tuple[dict[int, Anchor], str | None]:
    """Anchors by seq once every signature checks and no two disagree; else the first problem."""
    found: dict[int, Anchor] = {}
    for anchor in anchors:
        problem = anchor.signed_by(trusted)
        if problem is not None:
            return found, problem
        other = found.setdefault(anchor.seq, anchor)
        if other.hash != anchor.hash:
            return found, f"two anchors at seq {anchor.seq} name different hashes"
    return found, None


def verify_chain(
    conn: Connection,
    keys: AuditKeys | None = None,
    trusted: list[VerifyKey] | None = None,
    anchors: Sequence[Anchor] | None = None,
) -> VerifyResult:
    """Check everything; ``keys`` (the key file) enables MAC checks and trusts its public key.

    Without any trusted key, checkpoints cannot be checked and count as bad.
    ``anchors`` (None: not checked) must all be signed by a trusted key and match the chain.
    """
    trusted_keys = {k.key_id: k for k in (trusted or [])}
    if keys is not None:
        trusted_keys.setdefault(keys.key_id, keys.verify_key)
    checkpoints = {int(r.seq): r for r in conn.execute(select(audit_checkpoint)).all()}
    anchored, problem = _anchor_map(anchors or (), trusted_keys)
    if problem is not None:
        return VerifyResult(False, 0, len(checkpoints), None, None, problem)
    newest = max(anchored, default=0) if anchors is not None else None
    prev, expected_seq, count = GENESIS, 1, 0
    for row, stored_keys in _rows(conn):
        seq = int(row.seq)
        event_id = str(row.event_id)
        if seq != expected_seq:
            return VerifyResult(
                False, count, len(checkpoints), seq, event_id, f"expected seq {expected_seq} (deleted event)"
            )
        reason = _check_row(row, prev, keys, stored_keys)
        if reason is not None:
            return VerifyResult(False, count, len(checkpoints), seq, event_id, reason)
        prev = bytes(row.hash)
        checkpoint = checkpoints.get(seq)
        if checkpoint is not None:
            reason = _check_checkpoint(checkpoint, prev, trusted_keys)
            if reason is not None:
                return VerifyResult(False, count, len(checkpoints), seq, event_id, reason)
        anchor = anchored.get(seq)
        if anchor is not None and anchor.hash != prev:
            reason = (
                f"chain differs from the anchor at seq {seq} (events up to here were changed or replaced)"
            )
            return VerifyResult(False, count, len(checkpoints), seq, event_id, reason)
        count += 1
        expected_seq += 1
    lost = [s for s in anchored if s >= expected_seq]
    if lost:
        return VerifyResult(
            False,
            count,
            len(checkpoints),
            expected_seq,
            None,
            f"missing: anchored event seq {max(lost)} is gone, the chain ends at seq {count} "
            "(events deleted or truncated)",
        )
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
    stray = _stray_key(conn, count)
    if stray is not None:
        return VerifyResult(
            False,
            count,
            len(checkpoints),
            stray,
            None,
            "search keys (audit_event_key) of no event (inserted)",
        )
    return VerifyResult(True, count, len(checkpoints), anchored_seq=newest)


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
    engine: Engine,
    keys: AuditKeys | None = None,
    trusted: list[VerifyKey] | None = None,
    anchors: Sequence[Anchor] | None = None,
) -> VerifyResult:
    """Run :func:`verify_chain` in one read transaction (a consistent snapshot on PostgreSQL)."""
    options: dict[str, Any] = {}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    with engine.connect().execution_options(**options) as conn, conn.begin():
        return verify_chain(conn, keys, trusted, anchors)
