"""The store hook that writes the audit trail, and helpers for the HTTP/MLLP layers.

Why (IHE BALP; Circular 46/2018/TT-BYT Art. 8; ISO/IEC 27001:2022 A.8.15):
every change and every access must leave exactly one AuditEvent, and a
change must never commit without its record.  :class:`AuditHook` is both a
``StoreHook`` (runs inside the write transaction: one event per changed
resource) and an ``AccessHook`` (one event per read/vread/search/history, with
the patients whose data was returned).  Failures and denials, which never
reach the store, are recorded with :meth:`AuditHook.record_failure` and
:meth:`AuditHook.record_denial` in their own short transaction.

Access events are by default *group-committed*: :meth:`on_access` only appends a
tuple of what it was given (time, context, action, the returned resources,
the query) to a deque -- no lock and no event building on the request
thread -- and a background appender renders, hashes and writes whatever
has gathered in one transaction (one chain lock, one commit for many reads).
With ``durable_reads`` (setting ``audit_durable_reads``, the default) the
request thread then waits until the commit that holds its event is done (it leads that group commit itself, or waits for the one leading it),
so no answered read can be missing from the trail after a crash
(Circular 46/2018/TT-BYT Art. 8, IHE BALP), and a read whose event cannot be
written fails with 503 instead of being answered unrecorded.  Reads arriving
while a commit runs share the next one, so the cost is about one commit of
latency, not one commit per read (docs/benchmarks.md, "Durable read audit").
Without it (``audit_durable_reads=false``) the appender gathers reads for
``FLUSH_INTERVAL_S`` and the response does not wait: a *process* crash can lose
the access events still buffered -- never a change's record (those stay in the
write transaction) and never the chain's integrity; the metric
``carebridge_audit_unflushed_access_events`` shows how many are at risk.
A synchronous audit write inside each read's transaction (``async_reads=False``,
setting ``audit_async_reads``) serialises every read on the chain lock, which
takes read throughput far beyond the audit budget of issue #4.

SQLite, synchronous mode: a read runs in a DEFERRED transaction.  Appending there upgrades it to
a write, which succeeds when its snapshot is current (then the head it read is
the true head).  When another writer got in first SQLite refuses the upgrade
(``SQLITE_BUSY``) and the event is appended in a separate ``BEGIN IMMEDIATE``
transaction on a dedicated connection instead, so reads never fail or deadlock
because they are audited.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from audit.anchors import Anchorer
from audit.chain import ChainWriter, lock_chain
from audit.checkpointer import Checkpointer
from audit.checkpoints import AuditKeys, checkpoint_now
from audit.codes import MAJOR_FAILURE
from audit.events import Target, import_event, outcome_for_status, rest_event
from audit.rows import Prepared
from audit.store_events import AccessAction, access_row, change_row
from audit.store_events import patient_refs as patient_refs  # re-exported (consent tombstones use it)
from common import AuditSettings, CarebridgeError
from fhir_store import (
    RequestContext,
    ResourceChange,
    StoredResource,
    for_writing,
    is_sqlite,
    make_engine,
    now_us,
)

log = logging.getLogger("carebridge.audit")
BATCH_MAX = 2000
FLUSH_INTERVAL_S = 0.02  # the most access events a process crash can lose: one interval's worth
IDLE_WAIT_S = 1.0  # an idle appender re-checks the buffer this often even without a wake-up
DURABLE_WAIT_S = 30.0  # a read waits at most this long for its event's commit, then fails (503)
#: what the request thread hands to the appender: (recorded_us, context, action, resources, query)
Captured = tuple[int, RequestContext, AccessAction, tuple[StoredResource, ...], str | None]


class AuditUnavailable(CarebridgeError):
    """A read's access event could not be committed: the read is not answered (503)."""

    http_status = 503
    issue_code = "transient"


class _Marker(threading.Event):
    """Set by the appender once everything queued before it is committed (``written``) or given up."""

    written = False


def _is_busy(exc: Exception) -> bool:
    text = str(getattr(exc, "orig", None) or exc).lower()
    return "locked" in text or "busy" in text


class AuditHook:
    """Writes one AuditEvent per change (same transaction) and per access."""

    @classmethod
    def from_settings(cls, engine: Engine, settings: AuditSettings) -> AuditHook:
        """From the ``audit`` group of the settings tree (key file, checkpoint rules, batched reads, anchors)."""
        return cls(
            engine,
            AuditKeys.load_or_create(settings.key_file),
            checkpoint_every=settings.checkpoint_every,
            async_reads=settings.async_reads,
            checkpoint_interval_s=settings.checkpoint_interval_s,
            anchorer=Anchorer(settings.anchor_path, settings.anchor_url, timeout_s=settings.anchor_timeout_s),
            durable_reads=settings.durable_reads,
        )

    def __init__(
        self,
        engine: Engine,
        keys: AuditKeys,
        *,
        checkpoint_every: int = 1000,
        async_reads: bool = True,
        checkpoint_interval_s: float | None = None,
        anchorer: Anchorer | None = None,
        durable_reads: bool = True,
    ) -> None:
        self.engine = engine
        self.writer = ChainWriter(keys, checkpoint_every=checkpoint_every)
        # time-based and shutdown checkpoints, exported as anchors (audit.checkpointer)
        self.checkpointer: Checkpointer | None = None
        if checkpoint_interval_s is not None or anchorer is not None:
            self.checkpointer = Checkpointer(
                engine, self._sign_head, anchorer or Anchorer(None), checkpoint_interval_s or 0.0
            )
            self.writer.on_append = self.checkpointer.note_append
        self.async_reads = async_reads
        self.durable_reads = durable_reads
        self._side_engine: Engine | None = None
        self._side_lock = threading.Lock()
        # Captured accesses and flush markers, in arrival order.  deque.append/popleft are
        # atomic, so request threads never take a lock to hand over an access.
        self._pending: deque[Captured | _Marker] = deque()
        self._wake = threading.Event()
        self._idle = False
        self._stopping = False
        self._appender: threading.Thread | None = None
        self._commit_turn = threading.Condition()  # durable reads: who leads the next group commit
        self._leading = False
        self.dropped = 0  # access events lost after retries (exported as a metric later)

    # -- StoreHook --------------------------------------------------------------

    def on_changes(
        self, conn: Connection, changes: Sequence[ResourceChange], context: RequestContext
    ) -> None:
        recorded = now_us()
        self.writer.append_prepared(conn, [change_row(change, context, recorded) for change in changes])

    def on_group_changes(
        self, conn: Connection, batches: Sequence[tuple[Sequence[ResourceChange], RequestContext]]
    ) -> None:
        """A group commit's events in unit order: one chain lock, head read and insert for all."""
        recorded = now_us()
        rows = [change_row(change, context, recorded) for changes, context in batches for change in changes]
        self.writer.append_prepared(conn, rows)

    # -- AccessHook -------------------------------------------------------------

    def on_access(
        self,
        conn: Connection,
        action: AccessAction,
        resources: Sequence[StoredResource],
        context: RequestContext,
        query: str | None,
    ) -> None:
        if self.async_reads:
            # StoredResource is frozen and its bytes immutable: the appender may read them later.
            self._pending.append((now_us(), context, action, tuple(resources), query))
            if self.durable_reads:
                self._await_commit()
            elif self._idle or self._appender is None:
                self._wake_appender()
        else:
            self.append_access(conn, [access_row(now_us(), context, action, resources, query)])

    # -- buffered access events -------------------------------------------------

    @property
    def unflushed(self) -> int:
        """Access events captured but not yet committed (what a crash could lose without durable reads)."""
        return sum(1 for item in tuple(self._pending) if not isinstance(item, threading.Event))

    def _await_commit(self) -> None:
        """Block until the event just queued is committed: leader/follower group commit.

        The first waiting request thread leads: it drains everything queued (its own
        event and those of reads that arrived meanwhile), commits once and releases every
        marker it took; the others wait for that commit or lead the next one.  No thread
        hop on the way, so one client pays one commit, and concurrent clients share them.
        """
        marker = _Marker()
        self._pending.append(marker)
        deadline = time.monotonic() + DURABLE_WAIT_S
        with self._commit_turn:
            while not marker.is_set():
                if not self._leading:
                    self._leading = True
                    break
                self._commit_turn.wait(0.5)
                if time.monotonic() > deadline:
                    raise AuditUnavailable("the access could not be recorded in the audit trail; retry later")
        if not marker.is_set():
            try:
                self._drain()
            finally:
                with self._commit_turn:
                    self._leading = False
                    self._commit_turn.notify_all()
        if not marker.written:
            raise AuditUnavailable("the access could not be recorded in the audit trail; retry later")

    def _drain(self) -> None:
        """Commit everything queued now, batch by batch, and release the markers taken."""
        pending = self._pending
        while pending:
            batch: list[Captured] = []
            markers: list[_Marker] = []
            while pending and len(batch) < BATCH_MAX:
                item = pending.popleft()
                if isinstance(item, _Marker):
                    markers.append(item)
                else:
                    batch.append(item)
            written = self._write_batch(batch) if batch else True
            for marker in markers:
                marker.written = written
                marker.set()

    def _wake_appender(self) -> None:
        if self._appender is None:
            with self._side_lock:
                if self._appender is None:
                    self._stopping = False
                    self._appender = threading.Thread(target=self._run, name="audit-appender", daemon=True)
                    self._appender.start()
        self._wake.set()

    def _run(self) -> None:
        pending = self._pending
        while True:
            if not pending:
                if self._stopping:
                    return
                # Publish "idle" before the last look, so an access appended after that look
                # sees it and wakes us (both sides run under the GIL, in program order).
                self._idle = True
                if not pending and not self._stopping:
                    self._wake.wait(IDLE_WAIT_S)
                self._idle = False
                self._wake.clear()
                continue
            if not self.durable_reads and not isinstance(pending[0], threading.Event) and not self._stopping:
                # Let a batch gather: one transaction for many reads.  Only flush() and close()
                # set the event while we are busy, and then nobody should wait the interval out.
                # (Durable reads gather by themselves: whoever arrives during a commit waits for the next.)
                self._wake.wait(FLUSH_INTERVAL_S)
                self._wake.clear()
            batch: list[Captured] = []
            markers: list[_Marker] = []
            while pending and len(batch) < BATCH_MAX:
                item = pending.popleft()
                if isinstance(item, _Marker):
                    markers.append(item)  # everything queued before it is in this batch
                else:
                    batch.append(item)
            written = self._write_batch(batch) if batch else True
            for marker in markers:
                marker.written = written
                marker.set()

    def _write_batch(self, captured: list[Captured]) -> bool:
        """Render and commit ``captured``; False when any of them could not be written."""
        events: list[Prepared] = []
        lost = 0
        for item in captured:
            try:
                events.append(access_row(*item))
                continue
            except Exception as exc:  # unreadable content, or a bug: say so, never log content
                log.error("audit: patients of an access could not be read (%s)", type(exc).__name__)
            try:  # the access is still recorded, with its targets
                events.append(access_row(*item, with_patients=False))
            except Exception as exc:
                self.dropped += 1
                lost += 1
                log.error("audit: an access event could not be rendered: %s", type(exc).__name__)
        if not events:
            return lost == 0
        for attempt in range(5):
            try:
                self.append_rows(events)
                return lost == 0
            except Exception as exc:  # keep the appender alive; never log event content
                log.warning("audit append failed (attempt %d): %s", attempt + 1, type(exc).__name__)
                threading.Event().wait(0.05 * 2**attempt)
        self.dropped += len(events)
        log.error("audit: %d access events could not be written", len(events))
        return False

    def flush(self) -> None:
        """Wait until every buffered access event is in the chain (tests, shutdown, CLI)."""
        if self._appender is None and not self._pending:
            return
        marker = _Marker()
        self._pending.append(marker)  # set by the appender once everything before it is written
        self._wake_appender()
        while not marker.wait(0.5):
            if self._appender is None or not self._appender.is_alive():
                return

    def append_access(self, conn: Connection, events: Sequence[Prepared]) -> None:
        """Append access events from inside a read transaction (see module docstring)."""
        if not is_sqlite(self.engine):
            self.writer.append_prepared(conn, events)
            return
        # the chain's statements run on the driver cursor: its own OperationalError, unwrapped
        driver_error = self.engine.dialect.loaded_dbapi.OperationalError
        try:
            self.writer.append_prepared(conn, events)
            return
        except (OperationalError, driver_error) as exc:
            if not _is_busy(exc):
                raise
        self._append_side(events)

    def _append_side(self, events: Sequence[Prepared]) -> None:
        with self._side_lock:
            if self._side_engine is None:
                url = self.engine.url.render_as_string(hide_password=False)
                self._side_engine = make_engine(url, pool_size=1)
            with for_writing(self._side_engine).begin() as conn:
                self.writer.append_prepared(conn, events)

    def append_rows(self, events: Sequence[Prepared]) -> int:
        """Append rendered events in a transaction of their own; returns the last seq."""
        with self._write_engine().begin() as conn:
            return self.writer.append_prepared(conn, events)

    def _write_engine(self) -> Engine:
        return for_writing(self.engine)  # BEGIN IMMEDIATE on SQLite; made once per engine

    # -- outside the store: failures, denials, messages ------------------------

    def append(self, events: Sequence[dict[str, Any]]) -> int:
        """Append event dicts in a transaction of their own; returns the last seq."""
        with self._write_engine().begin() as conn:
            return self.writer.append(conn, events)

    def record_failure(
        self,
        context: RequestContext,
        interaction: str,
        status: int,
        *,
        target: Target | None = None,
        patient_ids: Iterable[str] = (),
        description: str | None = None,
    ) -> int:
        """A REST interaction that failed (4xx/5xx) and so changed nothing.

        ``description`` must not contain patient data (it is shown to auditors
        and exported): pass the OperationOutcome's diagnostics category, not input.
        """
        event = rest_event(
            context,
            interaction,
            recorded_us=now_us(),
            targets=[target] if target else [],
            patient_ids=patient_ids,
            outcome=outcome_for_status(status),
            outcome_desc=description or f"HTTP {status}",
        )
        return self.append([event])

    def record_denial(
        self,
        context: RequestContext,
        interaction: str,
        *,
        target: Target | None = None,
        patient_ids: Iterable[str] = (),
        reason: str = "access denied",
    ) -> int:
        """An interaction refused by authentication/authorization (outcome 12)."""
        event = rest_event(
            context,
            interaction,
            recorded_us=now_us(),
            targets=[target] if target else [],
            patient_ids=patient_ids,
            outcome=MAJOR_FAILURE,
            outcome_desc=reason,
        )
        return self.append([event])

    def record_message(
        self,
        context: RequestContext,
        *,
        control_id: str,
        message_type: str,
        ack_code: str,
        patient_ids: Iterable[str] = (),
        conn: Connection | None = None,
        deliveries: int = 1,
    ) -> int:
        """One event per received HL7 v2 message (DICOM 110107 Import), any outcome.

        Pass ``conn`` to record it in the journal's transaction (e.g. the
        ``extra`` callback of :meth:`FhirStore.transact`).  ``deliveries`` > 1: the
        event stands for that many duplicate deliveries (the ingest rate-limits them).
        """
        outcome = {"AA": "0", "CA": "0", "AE": "4", "CE": "4", "AR": "8", "CR": "8"}.get(ack_code, "8")
        event = import_event(
            context,
            "hl7-message",
            recorded_us=now_us(),
            patient_ids=patient_ids,
            message_control_id=control_id,
            message_type=message_type,
            outcome=outcome,
            outcome_desc=f"ACK {ack_code}" + (f"; {deliveries} deliveries" if deliveries > 1 else ""),
        )
        if conn is not None:
            return self.writer.append(conn, [event])
        return self.append([event])

    def checkpoint(self) -> int | None:
        """Sign the current head now (``carebridge audit checkpoint``), and anchor it when configured."""
        seq = self._sign_head()
        if self.checkpointer is not None:
            self.checkpointer.anchorer.export(self.engine)
        return seq

    def _sign_head(self) -> int | None:
        with self._write_engine().begin() as conn:
            lock_chain(conn)
            return checkpoint_now(conn, self.writer.keys)

    def close(self) -> None:
        """Write what is buffered, then stop the appender (a later access starts a new one)."""
        appender = self._appender
        if appender is not None:
            self._stopping = True
            self._wake.set()
            appender.join(timeout=30)
            self._appender = None
        if self.checkpointer is not None:  # the shutdown checkpoint, anchored
            self.checkpointer.close()
        if self._side_engine is not None:
            self._side_engine.dispose()
