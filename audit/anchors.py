"""Anchors: every signed checkpoint also leaves the database.

Why (ISO/IEC 27001:2022 A.5.33, A.8.15): a hash chain and checkpoints kept in
the same database as the events can be truncated together -- delete the last
events and their checkpoints, or everything, and what is left is still a valid
chain.  A copy of each checkpoint ``(seq, hash, signature, key id, time)``
written somewhere the database user cannot rewrite is what makes a truncation
evident: ``carebridge audit verify --anchors FILE`` requires every anchored
event to be present with the anchored hash.  This is the "publish the signed
tree head" step of Certificate Transparency (RFC 6962 §3.5, Signed Tree Head)
applied to a linear chain; the history-tree design of Crosby and Wallach
(USENIX Security 2009) would add small proofs of consistency between two
heads, which a linear chain replaces by recomputing from the start.

Two destinations:

* the anchor file: one JSON line per checkpoint, opened ``O_APPEND`` (the
  process never seeks or rewrites), created 0600, ``fsync``'d before the
  checkpoint counts as exported.  Put it on storage the database host cannot
  write, or ship it (docs/operations.md);
* optionally an HTTP(S) endpoint (setting ``audit_anchor_url``) that receives
  the same JSON by POST: an external witness.  Failures are logged (no patient
  data: the line holds hashes only), counted (:attr:`Anchorer.post_failures`)
  and retried at the next export; they never block an audit write.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select

from audit.checkpoints import VerifyKey
from audit.schema import audit_checkpoint

log = logging.getLogger("carebridge.audit")


class AnchorError(ValueError):
    """An anchor file that cannot be read (a malformed or foreign line)."""


@dataclass(frozen=True)
class Anchor:
    """One checkpoint as exported: enough to check its signature without the database."""

    seq: int
    hash: bytes
    signature: bytes
    key_id: str
    created_us: int

    def line(self) -> str:
        when = datetime.fromtimestamp(self.created_us / 1e6, UTC).isoformat().replace("+00:00", "Z")
        return json.dumps(
            {
                "seq": self.seq,
                "hash": self.hash.hex(),
                "signature": base64.b64encode(self.signature).decode(),
                "key_id": self.key_id,
                "created_us": self.created_us,
                "time": when,
            },
            sort_keys=True,
        )

    @classmethod
    def parse(cls, text: str) -> Anchor:
        try:
            data = json.loads(text)
            return cls(
                seq=int(data["seq"]),
                hash=bytes.fromhex(data["hash"]),
                signature=base64.b64decode(data["signature"], validate=True),
                key_id=str(data["key_id"]),
                created_us=int(data["created_us"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise AnchorError(f"not an anchor line ({type(exc).__name__})") from None

    def signed_by(self, trusted: dict[str, VerifyKey]) -> str | None:
        """None when a trusted key signed it; else why not."""
        key = trusted.get(self.key_id)
        if key is None:
            return f"anchor at seq {self.seq} is signed by an untrusted key {self.key_id}"
        if not key.check(self.seq, self.hash, self.created_us, self.signature):
            return f"anchor at seq {self.seq} has an invalid signature (forged anchor)"
        return None


def append_anchor(path: Path, anchors: Iterable[Anchor]) -> None:
    """Append lines, ``O_APPEND`` and 0600 on creation, then fsync (the anchor survives a crash)."""
    data = "".join(anchor.line() + "\n" for anchor in anchors).encode()
    if not data:
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_anchors(path: str | os.PathLike[str]) -> list[Anchor]:
    """Every anchor in the file, in file order; a malformed line is an error (named by line number)."""
    anchors: list[Anchor] = []
    for number, text in enumerate(Path(path).read_text().splitlines(), start=1):
        if not text.strip():
            continue
        try:
            anchors.append(Anchor.parse(text))
        except AnchorError as exc:
            raise AnchorError(f"{path} line {number}: {exc}") from None
    return anchors


_TAIL_BYTES = 64 * 1024  # an anchor line is about 300 bytes


def _last_anchor(path: Path) -> Anchor | None:
    """The file's last anchor line (None when there is none or it cannot be read).

    Only the tail is read: the file gains a line per checkpoint for years (one a minute is half a
    million a year) and this runs at every start.  The *last* line, not the highest seq, is what
    says where this process resumes: after a restore the file's highest seqs belong to the chain
    that was rolled back, and the first export re-anchors the restored chain after them.
    """
    try:
        with path.open("rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - _TAIL_BYTES))
            tail = handle.read().decode()
    except (OSError, UnicodeDecodeError):
        return None
    last = next((line for line in reversed(tail.splitlines()) if line.strip()), None)
    if last is None:
        return None
    try:
        return Anchor.parse(last)
    except AnchorError:
        return None


class Anchorer:
    """Copies checkpoints not yet exported to the anchor file and the optional endpoint."""

    def __init__(self, path: Path | None, url: str = "", *, timeout_s: float = 5.0) -> None:
        self.path = path
        self.url = url
        self.timeout_s = timeout_s
        self.post_failures = 0  # exported as carebridge_audit_anchor_post_failures_total
        self._exported: int | None = None  # the highest seq anchored; found at the first export
        self._unposted: list[Anchor] = []

    def _resume(self, conn: Connection) -> int:
        """Where this process resumes: after the file's last anchor if it is this database's checkpoint.

        Otherwise (a new file, or one that belongs to another or an earlier database, e.g. after
        a restore) every checkpoint is anchored again; a rolled-back chain then shows up in
        ``verify --anchors`` as two anchors that disagree, as it should.
        """
        last = _last_anchor(self.path) if self.path is not None else None
        if last is None:
            return 0
        stored = conn.execute(
            select(audit_checkpoint.c.hash).where(audit_checkpoint.c.seq == last.seq)
        ).first()
        if stored is not None and bytes(stored[0]) == last.hash:
            return last.seq
        log.warning("audit anchor file does not end at a checkpoint of this database; anchoring all again")
        return 0

    def export(self, engine: Engine) -> int:
        """Anchor every checkpoint after the last exported one; returns how many were new."""
        c = audit_checkpoint.c
        with engine.connect() as conn:
            if self._exported is None:
                self._exported = self._resume(conn)
            rows = conn.execute(select(audit_checkpoint).where(c.seq > self._exported).order_by(c.seq)).all()
        fresh = [
            Anchor(int(r.seq), bytes(r.hash), bytes(r.signature), str(r.key_id), int(r.created_us))
            for r in rows
        ]
        if fresh:
            if self.path is not None:
                append_anchor(self.path, fresh)
            self._exported = fresh[-1].seq
            if self.url:
                self._unposted.extend(fresh)
        self.post_pending()
        return len(fresh)

    def post_pending(self) -> None:
        """POST what the endpoint has not acknowledged yet, oldest first; stop at the first failure."""
        while self._unposted and self.url:
            anchor = self._unposted[0]
            try:
                _post(self.url, anchor.line().encode(), self.timeout_s)
            except Exception as exc:  # any failure: count, log the kind only, retry next export
                self.post_failures += 1
                log.warning("audit anchor POST failed (seq %d): %s", anchor.seq, type(exc).__name__)
                return
            self._unposted.pop(0)


def _post(url: str, body: bytes, timeout_s: float) -> Any:
    if not url.startswith(("https://", "http://")):
        raise ValueError("anchor URL must be http(s)")
    request = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        if response.status >= 300:
            raise OSError(f"HTTP {response.status}")
        return response.read()
