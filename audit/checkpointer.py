"""Time-based checkpoints: the chain head is signed and anchored soon after every write.

Why (ISO/IEC 27001:2022 A.5.33, A.8.15): a checkpoint every N events leaves a
quiet clinic's last events unsigned for days, and an event that is not
covered by an anchor can be removed or rewritten without trace by whoever
can write the database (docs/compliance.md, "What an attacker can hide").
So, besides the every-N rule of :class:`audit.chain.ChainWriter`, a
background thread signs the head at most ``interval_s`` after the first
event that no checkpoint covers yet, and once more when the process stops
(:meth:`Checkpointer.close`: ``carebridge serve`` shutdown, CLI commands),
then hands every new checkpoint to the :class:`audit.anchors.Anchorer`.

The thread never runs inside a write: appends only note the time
(:meth:`note_append`), so a slow disk or an unreachable anchor endpoint
delays the anchor, never an audited request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import Engine

from audit.anchors import Anchorer

log = logging.getLogger("carebridge.audit")


class Checkpointer:
    """Signs the head within ``interval_s`` of an unsigned write and at close; exports anchors."""

    def __init__(
        self,
        engine: Engine,
        checkpoint: Callable[[], int | None],
        anchorer: Anchorer,
        interval_s: float,
    ) -> None:
        self.engine = engine
        self._checkpoint = checkpoint
        self.anchorer = anchorer
        self.interval_s = interval_s
        self._dirty_since: float | None = None  # monotonic time of the first unsigned append
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.failures = 0

    def note_append(self) -> None:
        """Called by the chain writer after each append (inside the caller's transaction)."""
        if self._dirty_since is None:
            self._dirty_since = time.monotonic()
        if self.interval_s > 0 and self._thread is None and not self._stopping:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="audit-checkpointer", daemon=True)
                    self._thread.start()

    def _run(self) -> None:
        while not self._stopping:
            dirty = self._dirty_since
            wait = self.interval_s if dirty is None else max(0.0, dirty + self.interval_s - time.monotonic())
            if self._wake.wait(wait):
                self._wake.clear()
                continue
            if self._dirty_since is not None and not self._stopping:
                self.tick()

    def tick(self) -> int | None:
        """Sign the head now (if it moved) and export new checkpoints; returns the head's seq."""
        dirty, self._dirty_since = self._dirty_since, None
        try:
            seq = self._checkpoint()
            self.anchorer.export(self.engine)
        except Exception as exc:  # database or disk down: try again after the next interval
            self.failures += 1
            if self._dirty_since is None:
                self._dirty_since = dirty if dirty is not None else time.monotonic()
            log.warning("audit checkpoint/anchor failed: %s", type(exc).__name__)
            return None
        return seq

    def close(self) -> None:
        """Stop the thread; sign and anchor the head one last time if anything was written."""
        self._stopping = True
        thread = self._thread
        if thread is not None:
            self._wake.set()
            thread.join(timeout=30)
            self._thread = None
        if self._dirty_since is not None:
            self.tick()
        self._stopping = False
