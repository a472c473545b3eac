"""``/readyz``: can this process do its work now -- read, write, keep up -- and if not, why.

Why more than ``SELECT 1``: a database that answers reads while its volume is
full refuses every write, and a readiness check that only reads stays green
while every HL7 message gets AE (issue #17).  Each check below is cheap and
bounded (``CAREBRIDGE_STORE_PROBE_TIMEOUT_S``); the answer names every failing
check so an operator knows where to look (docs/operations.md, "Readiness"):

``database``   reachable and at the schema revision this code expects;
``write``      a write transaction can start: SQLite takes its write lock
               (``BEGIN IMMEDIATE``, then rolls back), PostgreSQL runs a statement
               in a read-write transaction under a statement timeout;
``commits``    no store write failed for an environmental reason in the last
               ``CAREBRIDGE_STORE_WRITE_FAILURE_S`` without a later commit
               (:class:`fhir_store.WriteHealth`: disk full, connection lost);
``disk``       SQLite: the database volume has ``CAREBRIDGE_STORE_MIN_FREE_BYTES``
               free (SQLite keeps small writes going in its WAL until the file
               must grow, so the write probe alone would stay green);
``backlog``    no journaled HL7 message has waited (``received``) longer than
               ``CAREBRIDGE_HL7_BACKLOG_S``;
``dispatcher`` where this process started the webhook dispatcher: its thread is
               alive and no round has run longer than ``CAREBRIDGE_CRM_WORKER_STUCK_S``.

``/healthz`` stays liveness only (the process answers), so an orchestrator
restarts a process that hangs, not one whose database is full.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine, text

from fhir_store import (
    FhirStore,
    current_revision,
    head_revision,
    journal_oldest_received_us,
    now_us,
    transient_kind,
)
from gateway.settings import Settings


class DispatcherHealth(Protocol):
    def health(self) -> tuple[bool, bool, float | None]: ...


@dataclass
class Readiness:
    """The checks' verdicts: ``reasons`` is empty when ready."""

    database: str = "reachable"
    schema_revision: str | None = None
    expected_revision: str | None = None
    reasons: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.reasons

    def body(self) -> dict[str, object]:
        return {
            "status": "ready" if self.ready else "not ready",
            "database": self.database,
            "schema_revision": self.schema_revision,
            "expected_revision": self.expected_revision,
            "reasons": self.reasons,
        }


def sqlite_path(engine: Engine) -> Path | None:
    """The file of a file-backed SQLite database, else None."""
    if engine.dialect.name != "sqlite":
        return None
    name = engine.url.database
    if not name or name == ":memory:" or name.startswith("file:"):
        return None
    return Path(name)


def _write_probe(engine: Engine, timeout_s: float) -> None:
    """Start a write transaction and roll it back, within ``timeout_s``; raises when it cannot."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            raw = conn.connection.driver_connection  # outside SQLAlchemy's own BEGIN
            assert raw is not None
            raw.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            try:
                raw.execute("BEGIN IMMEDIATE")
                raw.execute("ROLLBACK")
            finally:
                raw.execute("PRAGMA busy_timeout=30000")  # fhir_store.database's setting
            return
        transaction = conn.begin()
        try:  # a standby promoted wrongly, or default_transaction_read_only, refuses READ WRITE
            conn.exec_driver_sql("SET TRANSACTION READ WRITE")
            conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
            conn.execute(text("SELECT 1"))
        finally:
            transaction.rollback()


def check(
    store: FhirStore,
    settings: Settings,
    dispatcher: DispatcherHealth | None = None,
    engine: Engine | None = None,
) -> Readiness:
    """Run every check (blocking: call it in a worker thread)."""
    engine = engine if engine is not None else store.engine  # the health pool: API load cannot starve it
    result = Readiness(expected_revision=head_revision())
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            oldest = journal_oldest_received_us(conn)
        result.schema_revision = current_revision(engine)
    except Exception:  # any database failure means "not ready"; details stay out of the answer
        result.database = "unreachable"
        result.reasons.append("database: unreachable")
        return result
    if result.schema_revision != result.expected_revision:
        result.reasons.append("database: schema revision is not the expected one (run the migrations)")
    try:
        _write_probe(engine, settings.store.probe_timeout_s)
    except Exception as exc:
        result.reasons.append(f"write: a write transaction cannot start ({transient_kind(exc) or 'error'})")
    failure = store.write_health.unresolved_failure(settings.store.write_failure_s)
    if failure is not None:
        age = store.write_health.now() - failure.at
        result.reasons.append(f"commits: the last write failed ({failure.kind}) {age:.0f}s ago, none since")
    path = sqlite_path(engine)
    if path is not None:
        try:
            stats = os.statvfs(path.parent)
            free = stats.f_bavail * stats.f_frsize
        except OSError:
            free = None
        if free is not None and free < settings.store.min_free_bytes:
            result.reasons.append(
                f"disk: {free} bytes free on the database volume (below {settings.store.min_free_bytes})"
            )
    if oldest is not None:
        waited = (now_us() - oldest) / 1_000_000
        if waited > settings.hl7.backlog_s:
            result.reasons.append(f"backlog: an HL7 message has waited {waited:.0f}s (received, not applied)")
    if dispatcher is not None:
        started, running, round_s = dispatcher.health()
        if started and not running:
            result.reasons.append("dispatcher: the webhook dispatcher is not running")
        elif round_s is not None and round_s > settings.crm.worker_stuck_s:
            result.reasons.append(f"dispatcher: a webhook round has run for {round_s:.0f}s")
    return result
