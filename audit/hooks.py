"""The store hook that writes the audit trail, and helpers for the HTTP/MLLP layers.

Why (IHE BALP; Circular 46/2018/TT-BYT Art. 8; ISO/IEC 27001:2022 A.8.15):
every change and every access must leave exactly one AuditEvent, and a
change must never commit without its record.  :class:`AuditHook` is both a
``StoreHook`` (runs inside the write transaction: one event per changed
resource) and an ``AccessHook`` (one event per read/vread/search/history, with
the patients whose data was returned).  Failures and denials, which never
reach the store, are recorded with :meth:`AuditHook.record_failure` and
:meth:`AuditHook.record_denial` in their own short transaction.

Access events are by default *buffered*: :meth:`on_access` builds the event
and hands it to a background appender that writes whatever has queued in one
transaction every ``FLUSH_INTERVAL_S`` (one chain lock, one commit for many
reads).  A synchronous audit
write per read costs a write commit per read (measured: -75% read throughput
on SQLite, -74% with 8 threads on PostgreSQL, where the chain lock serializes
the tails of all reads), far beyond the 25% budget.  The price: a *process*
crash can lose the access events of the last few milliseconds -- never a
change's record (those stay in the write transaction) and never the chain's
integrity.  ``async_reads=False`` (setting ``audit_async_reads``) writes each
access event inside the read's transaction instead.

SQLite, synchronous mode: a read runs in a DEFERRED transaction.  Appending there upgrades it to
a write, which succeeds when its snapshot is current (then the head it read is
the true head).  When another writer got in first SQLite refuses the upgrade
(``SQLITE_BUSY``) and the event is appended in a separate ``BEGIN IMMEDIATE``
transaction on a dedicated connection instead, so reads never fail or deadlock
because they are audited.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal, Protocol

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from audit.chain import ChainWriter, lock_chain
from audit.checkpoints import AuditKeys, checkpoint_now
from audit.events import (
    MAJOR_FAILURE,
    Target,
    import_event,
    outcome_for_status,
    rest_event,
)
from fhir_store.database import is_sqlite, make_engine
from fhir_store.instants import now_us
from fhir_store.model import RequestContext, ResourceChange, StoredResource

log = logging.getLogger("carebridge.audit")
BATCH_MAX = 500
FLUSH_INTERVAL_S = 0.02  # the most access events a process crash can lose: ~20 ms worth
_ACCESS_SUBTYPE = {"read": "read", "vread": "vread", "search": "search-type", "history": "history"}


def patient_refs(resource: dict[str, Any] | None) -> list[str]:
    """Ids of the patients a resource is about (Patient itself, subject, patient, participants)."""
    if not resource:
        return []
    if resource.get("resourceType") == "Patient":
        return [str(resource["id"])] if resource.get("id") else []
    refs: list[str] = []
    for key in ("subject", "patient", "beneficiary"):
        ref = (resource.get(key) or {}).get("reference")
        if isinstance(ref, str):
            refs.append(ref)
    for participant in resource.get("participant") or ():
        ref = ((participant or {}).get("actor") or {}).get("reference")
        if isinstance(ref, str):
            refs.append(ref)
    return [r.split("/", 1)[1] for r in refs if r.startswith("Patient/")]


def _stored_patients(resources: Iterable[StoredResource]) -> list[str]:
    out: list[str] = []
    for stored in resources:
        if stored.resource_type == "Patient":
            out.append(stored.id)
        elif stored.content is not None:
            out.extend(patient_refs(stored.resource()))
    return list(dict.fromkeys(out))


def _is_busy(exc: OperationalError) -> bool:
    text = str(exc.orig).lower()
    return "locked" in text or "busy" in text


class AuditSettings(Protocol):
    """The settings the hook reads (``gateway.settings.Settings`` has them; no import upwards)."""

    @property
    def audit_key_file(self) -> str: ...
    @property
    def audit_checkpoint_every(self) -> int: ...
    @property
    def audit_async_reads(self) -> bool: ...


class AuditHook:
    """Writes one AuditEvent per change (same transaction) and per access."""

    @classmethod
    def from_settings(cls, engine: Engine, settings: AuditSettings) -> AuditHook:
        return cls(
            engine,
            AuditKeys.load_or_create(settings.audit_key_file),
            checkpoint_every=settings.audit_checkpoint_every,
            async_reads=settings.audit_async_reads,
        )

    def __init__(
        self,
        engine: Engine,
        keys: AuditKeys,
        *,
        checkpoint_every: int = 1000,
        async_reads: bool = True,
    ) -> None:
        self.engine = engine
        self.writer = ChainWriter(keys, checkpoint_every=checkpoint_every)
        self.async_reads = async_reads
        self._side_engine: Engine | None = None
        self._side_lock = threading.Lock()
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._appender: threading.Thread | None = None
        self.dropped = 0  # access events lost after retries (exported as a metric later)

    # -- StoreHook --------------------------------------------------------------

    def on_changes(
        self, conn: Connection, changes: Sequence[ResourceChange], context: RequestContext
    ) -> None:
        recorded = now_us()
        events = []
        for change in changes:
            target = Target(change.resource_type, change.id, change.version_id)
            patients = patient_refs(change.resource if change.resource is not None else change.previous)
            if change.resource_type == "Patient" and not patients:
                patients = [change.id]
            if context.channel == "hl7":
                event = import_event(
                    context, change.action, recorded_us=recorded, targets=[target], patient_ids=patients
                )
            else:
                event = rest_event(
                    context, change.action, recorded_us=recorded, targets=[target], patient_ids=patients
                )
            events.append(event)
        self.writer.append(conn, events)

    # -- AccessHook -------------------------------------------------------------

    def on_access(
        self,
        conn: Connection,
        action: Literal["read", "vread", "search", "history"],
        resources: Sequence[StoredResource],
        context: RequestContext,
        query: str | None,
    ) -> None:
        if action in ("read", "vread"):
            targets = [Target(r.resource_type, r.id, r.version_id) for r in resources]
        else:
            targets = []
        event = rest_event(
            context,
            _ACCESS_SUBTYPE[action],
            recorded_us=now_us(),
            targets=targets,
            patient_ids=_stored_patients(resources),
            query=query,
        )
        if self.async_reads:
            self._enqueue(event)
        else:
            self.append_access(conn, [event])

    # -- buffered access events -------------------------------------------------

    def _enqueue(self, event: dict[str, Any]) -> None:
        if self._appender is None:
            with self._side_lock:
                if self._appender is None:
                    self._appender = threading.Thread(target=self._run, name="audit-appender", daemon=True)
                    self._appender.start()
        self._queue.put(event)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is not None:
                time.sleep(FLUSH_INTERVAL_S)  # let a batch gather: one transaction for many reads
            batch = [first]
            while len(batch) < BATCH_MAX:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            events = [e for e in batch if e is not None]
            if events:
                self._write_batch(events)
            for _ in batch:
                self._queue.task_done()
            if first is None or len(events) < len(batch):
                return

    def _write_batch(self, events: list[dict[str, Any]]) -> None:
        for attempt in range(5):
            try:
                self.append(events)
                return
            except Exception as exc:  # keep the appender alive; never log event content
                log.warning("audit append failed (attempt %d): %s", attempt + 1, type(exc).__name__)
                threading.Event().wait(0.05 * 2**attempt)
        self.dropped += len(events)
        log.error("audit: %d access events could not be written", len(events))

    def flush(self) -> None:
        """Wait until every buffered access event is in the chain (tests, shutdown, CLI)."""
        if self._appender is not None:
            self._queue.join()

    def append_access(self, conn: Connection, events: Sequence[dict[str, Any]]) -> None:
        """Append access events from inside a read transaction (see module docstring)."""
        if not is_sqlite(self.engine):
            self.writer.append(conn, events)
            return
        try:
            self.writer.append(conn, events)
            return
        except OperationalError as exc:
            if not _is_busy(exc):
                raise
        self._append_side(events)

    def _append_side(self, events: Sequence[dict[str, Any]]) -> None:
        with self._side_lock:
            if self._side_engine is None:
                url = self.engine.url.render_as_string(hide_password=False)
                self._side_engine = make_engine(url, pool_size=1)
            side = self._side_engine.execution_options(sqlite_begin="IMMEDIATE")
            with side.begin() as conn:
                self.writer.append(conn, events)

    # -- outside the store: failures, denials, messages ------------------------

    def append(self, events: Sequence[dict[str, Any]]) -> int:
        """Append ``events`` in a transaction of their own; returns the last seq."""
        engine = (
            self.engine.execution_options(sqlite_begin="IMMEDIATE") if is_sqlite(self.engine) else self.engine
        )
        with engine.begin() as conn:
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
    ) -> int:
        """One event per received HL7 v2 message (DICOM 110107 Import), any outcome.

        Pass ``conn`` to record it in the journal's transaction (e.g. the
        ``extra`` callback of :meth:`FhirStore.transact`).
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
            outcome_desc=f"ACK {ack_code}",
        )
        if conn is not None:
            return self.writer.append(conn, [event])
        return self.append([event])

    def checkpoint(self) -> int | None:
        """Sign the current head now (``carebridge audit checkpoint``)."""
        engine = (
            self.engine.execution_options(sqlite_begin="IMMEDIATE") if is_sqlite(self.engine) else self.engine
        )
        with engine.begin() as conn:
            lock_chain(conn)
            return checkpoint_now(conn, self.writer.keys)

    def close(self) -> None:
        if self._appender is not None:
            self._queue.put(None)
            self._appender.join(timeout=30)
            self._appender = None
        if self._side_engine is not None:
            self._side_engine.dispose()
