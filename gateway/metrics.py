"""Operational metrics beyond HTTP (issue #7 §2): HL7 traffic, journal, audit chain, CRM delivery.

Two kinds of numbers, two mechanisms:

* **Events since start** (HL7 messages received and answered) are counters
  kept in memory by :class:`Hl7Counters`, incremented by
  :class:`gateway.ingest.Ingestor` for every message it answers.  One
  instance per :class:`~gateway.runtime.Runtime` (``runtime.hl7_counters``), so
  the MLLP listener that increments and the ``/metrics`` route that reads see
  the same numbers, and two runtimes in one test process never mix.
* **State** (journal backlog, audit chain length and last checkpoint, CRM
  outbox backlog and dead letters) is read from the database *at scrape time*
  by :class:`OpsCollector`, a custom prometheus_client collector
  (https://prometheus.github.io/client_python/collector/custom/).  State kept
  in the database is then right after a restart, identical whichever HTTP
  worker process answers the scrape, and never drifts from the tables an
  operator would query by hand.  Every query is a ``COUNT``/``MAX`` over an
  indexed column, so a scrape every 15 s costs next to nothing.

Label values never carry patient data: message types are reduced to
``ADT^A04``-shaped codes (anything else becomes ``unknown``), CRM series are
labelled by the CRM's OAuth client id and subscription id only.

Webhook delivery latency (``carebridge_crm_webhook_delivery_seconds``, one
observation per POST attempt) is an event of the first kind: the dispatcher
(:mod:`crm_bridge.delivery`) reports each attempt to the runtime's
:class:`WebhookLatency`, which :class:`~gateway.runtime.Runtime` attaches when
it is created, so attempts made before the first scrape are counted too.
``carebridge_crm_webhook_oldest_pending_age_seconds`` (how long the oldest
undelivered event has waited) is the signal for a receiver that stopped
answering altogether.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import Connection, Engine

from audit import chain_length, last_checkpoint
from crm_bridge import (
    dead_letter_counts,
    his_outbox_counts,
    outbox_heads,
    subscribed_crm_ids,
    webhook_backlogs,
)
from fhir_store import JOURNAL_OPEN_STATUSES, JOURNAL_RECEIVED, for_reading, journal_open_counts
from gateway.logging_setup import get_logger

if TYPE_CHECKING:
    from gateway.runtime import Runtime
    from mappers import Header

log = get_logger("carebridge.metrics")

UNKNOWN = "unknown"
_MESSAGE_TYPE = re.compile(r"^[A-Z][A-Z0-9]{2}\^[A-Z0-9]{3}$")
_WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def message_type_label(header: Header | None) -> str:
    """``MSH-9.1^MSH-9.2`` when it looks like an HL7 code, else ``unknown``.

    Bounds the label's cardinality: a sender cannot create new time series by
    putting free text (or a patient's name, by mistake) into MSH-9.
    """
    if header is None:
        return UNKNOWN
    value = f"{header.message_code}^{header.trigger_event}".strip().upper()
    return value if _MESSAGE_TYPE.match(value) else UNKNOWN


class Hl7Counters:
    """Thread-safe HL7 counters: messages received, and answers by ACK code (AA = acked, AE/AR = nacked).

    Plain dictionaries behind a lock rather than prometheus_client ``Counter``
    objects, so they belong to one runtime and not to a process-global
    registry; :class:`OpsCollector` renders them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._received: dict[str, int] = {}
        self._answered: dict[tuple[str, str], int] = {}
        self._reused: dict[str, int] = {}
        self._stale: dict[str, int] = {}
        self._refused: dict[str, int] = {}
        self._connections_refused: dict[str, int] = {}
        self._transient: dict[str, int] = {}
        self._duplicates = 0

    def received(self, message_type: str) -> None:
        with self._lock:
            self._received[message_type] = self._received.get(message_type, 0) + 1

    def answered(self, message_type: str, ack_code: str) -> None:
        code = ack_code if ack_code in ("AA", "AE", "AR") else "AE"
        with self._lock:
            key = (message_type, code)
            self._answered[key] = self._answered.get(key, 0) + 1

    def control_id_reused(self, action: str) -> None:
        """A sender + MSH-10 journaled before with other content (``action``: process or refuse)."""
        with self._lock:
            self._reused[action] = self._reused.get(action, 0) + 1

    def stale(self, message_type: str) -> None:
        """A message applied in part: writes older than the stored state held back (event order)."""
        with self._lock:
            self._stale[message_type] = self._stale.get(message_type, 0) + 1

    def stale_snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stale)

    def sender_refused(self, reason: str) -> None:
        """A message refused by the sender check (unknown, disabled, peer, certificate, refused-at-receipt)."""
        with self._lock:
            self._refused[reason] = self._refused.get(reason, 0) + 1

    def connection_refused(self, reason: str) -> None:
        """An MLLP connection closed at once: over the total or the per-peer cap (gateway.mllp.limits)."""
        with self._lock:
            self._connections_refused[reason] = self._connections_refused.get(reason, 0) + 1

    def connections_refused_snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._connections_refused)

    def transient(self, kind: str) -> None:
        """A message not applied because of the environment (kind: connection, disk-full, ...): AE, not final."""
        with self._lock:
            self._transient[kind] = self._transient.get(kind, 0) + 1

    def transient_snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._transient)

    def duplicate(self) -> None:
        """A duplicate delivery answered from the journal (its audit events are rate-limited)."""
        with self._lock:
            self._duplicates += 1

    def duplicates(self) -> int:
        with self._lock:
            return self._duplicates

    def refused_snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._refused)

    def reused_snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._reused)

    def snapshot(self) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
        with self._lock:
            return dict(self._received), dict(self._answered)


def hl7_counters(runtime: Runtime) -> Hl7Counters:
    """The runtime's counters, shared by the MLLP listener and ``/metrics``."""
    return runtime.hl7_counters


class WebhookLatency:
    """Webhook POST durations of one runtime's dispatcher, by outcome (ok = 2xx, error = anything else).

    A histogram on a registry of its own, like :class:`Hl7Counters` one per
    runtime: it must exist before the dispatcher's first delivery, which is
    long before anyone scrapes ``/metrics``.
    """

    def __init__(self) -> None:
        self._registry = CollectorRegistry(auto_describe=False)
        self._histogram = Histogram(
            "carebridge_crm_webhook_delivery_seconds",
            "Webhook POST duration per attempt, by outcome",
            ("outcome",),
            buckets=_WEBHOOK_BUCKETS,
            registry=self._registry,
        )

    def observe(self, seconds: float, ok: bool) -> None:
        """The dispatcher's ``on_delivery`` callback: one call per POST attempt."""
        self._histogram.labels("ok" if ok else "error").observe(seconds)

    def collect(self) -> Iterable[Metric]:
        return self._registry.collect()


def webhook_latency(runtime: Runtime) -> WebhookLatency:
    """The runtime's histogram (``Runtime.create`` attaches it to the CRM dispatcher)."""
    return runtime.webhook_latency


def _gauge(name: str, doc: str, value: float | None = None, labels: Iterable[str] = ()) -> GaugeMetricFamily:
    if value is not None:
        return GaugeMetricFamily(name, doc, value=value)
    return GaugeMetricFamily(name, doc, labels=list(labels))


class OpsCollector(Collector):
    """Renders :class:`Hl7Counters` and queries the database for state gauges at every scrape.

    Blocking (database I/O): the ``/metrics`` route runs ``generate_latest``
    in a worker thread.  A failing query never fails the scrape: the section
    is skipped and ``carebridge_metrics_database_up`` says 0, so an alert can
    tell "no backlog" from "could not look".
    """

    def __init__(
        self,
        engine: Engine,
        counters: Hl7Counters,
        crm: Any | None = None,
        webhook_latency: WebhookLatency | None = None,
        audit: Any | None = None,
    ) -> None:
        self.audit = audit  # audit.AuditHook: its buffered access events (not in the database yet)
        self.engine = engine
        self.counters = counters
        self.crm = crm  # crm_bridge.bridge.CrmBridge when configured (reads its dispatcher's totals)
        self.webhook_latency = webhook_latency if webhook_latency is not None else WebhookLatency()

    @classmethod
    def for_runtime(cls, runtime: Runtime) -> OpsCollector:
        return cls(runtime.engine, runtime.hl7_counters, runtime.crm, runtime.webhook_latency, runtime.audit)

    def describe(self) -> Iterable[Metric]:
        return []  # names are stable but the DB is not queried at registration

    def collect(self) -> Iterator[Metric]:
        yield from self._hl7()
        yield from self._dispatcher()
        yield from self.webhook_latency.collect()
        if self.audit is not None:
            yield _gauge(
                "carebridge_audit_unflushed_access_events",
                "Access events captured but not yet committed (lost by a crash; 0 with durable reads)",
                self.audit.unflushed,
            )
            yield _gauge(
                "carebridge_audit_dropped_access_events",
                "Access events that could not be written after retries (the reads failed when durable)",
                self.audit.dropped,
            )
        up = 1.0
        families: list[Metric] = []
        try:
            with for_reading(self.engine).connect() as conn:
                for section in (self._journal, self._audit, self._crm):
                    try:
                        families.extend(section(conn))
                    except Exception as exc:  # one broken section must not hide the others
                        log.warning(
                            "metrics query failed", section=section.__name__, error_type=type(exc).__name__
                        )
                        conn.rollback()
                        up = 0.0
        except Exception as exc:  # the scrape must still answer; no details (could quote SQL params)
            log.warning("metrics database unreachable", error_type=type(exc).__name__)
            up = 0.0
        yield from families
        yield _gauge(
            "carebridge_metrics_database_up", "1 if the state gauges below could be read at this scrape", up
        )

    # -- in-memory counters ------------------------------------------------------------------

    def _hl7(self) -> Iterator[Metric]:
        received, answered = self.counters.snapshot()
        total = CounterMetricFamily(
            "carebridge_hl7_messages_received",
            "HL7 v2 messages received over MLLP since start, by message type",
            labels=["message_type"],
        )
        for mtype, n in sorted(received.items()):
            total.add_metric([mtype], n)
        acked = CounterMetricFamily(
            "carebridge_hl7_messages_acked",
            "HL7 v2 messages answered AA (applied) since start, by message type",
            labels=["message_type"],
        )
        nacked = CounterMetricFamily(
            "carebridge_hl7_messages_nacked",
            "HL7 v2 messages answered AE or AR since start, by message type and ACK code",
            labels=["message_type", "ack_code"],
        )
        for (mtype, code), n in sorted(answered.items()):
            if code == "AA":
                acked.add_metric([mtype], n)
            else:
                nacked.add_metric([mtype, code], n)
        reused = CounterMetricFamily(
            "carebridge_hl7_control_id_reused",
            "HL7 v2 messages whose sender and MSH-10 were journaled before with other content,"
            " by the action taken (process or refuse)",
            labels=["action"],
        )
        for action, n in sorted(self.counters.reused_snapshot().items()):
            reused.add_metric([action], n)
        stale = CounterMetricFamily(
            "carebridge_hl7_messages_stale",
            "HL7 v2 messages answered AA whose event was older than the stored state of a resource"
            " they would set, which was left unchanged (journal status stale), by message type",
            labels=["message_type"],
        )
        for mtype, n in sorted(self.counters.stale_snapshot().items()):
            stale.add_metric([mtype], n)
        refused = CounterMetricFamily(
            "carebridge_hl7_senders_refused",
            "HL7 v2 messages refused because MSH-3/MSH-4 is not a registered sender on that connection,"
            " by reason (unknown, disabled, peer, certificate, refused-at-receipt)",
            labels=["reason"],
        )
        for reason, n in sorted(self.counters.refused_snapshot().items()):
            refused.add_metric([reason], n)
        connections = CounterMetricFamily(
            "carebridge_mllp_connections_refused",
            "MLLP connections closed at once because a cap was reached, by reason (total, per-peer)",
            labels=["reason"],
        )
        for reason, n in sorted(self.counters.connections_refused_snapshot().items()):
            connections.add_metric([reason], n)
        transient = CounterMetricFamily(
            "carebridge_hl7_transient_failures",
            "HL7 v2 messages answered AE because the database failed for an environmental reason"
            " (not stored as final: the resend applies them), by kind (connection, disk-full, ...)",
            labels=["kind"],
        )
        for kind, n in sorted(self.counters.transient_snapshot().items()):
            transient.add_metric([kind], n)
        duplicates = CounterMetricFamily(
            "carebridge_hl7_duplicate_deliveries",
            "HL7 v2 deliveries answered with the ACK stored for an earlier delivery of the same message",
            value=self.counters.duplicates(),
        )
        yield from (total, acked, nacked, reused, stale, refused, connections, transient, duplicates)

    def _dispatcher(self) -> Iterator[Metric]:
        dispatcher = getattr(self.crm, "dispatcher", None)
        if dispatcher is None:
            return
        yield CounterMetricFamily(
            "carebridge_crm_webhooks_delivered",
            "Webhook events delivered (2xx) by this process since start",
            value=int(getattr(dispatcher, "delivered", 0)),
        )
        yield CounterMetricFamily(
            "carebridge_crm_webhooks_dead_lettered",
            "Webhook events dead-lettered by this process since start",
            value=int(getattr(dispatcher, "dead_lettered", 0)),
        )

    # -- database state ----------------------------------------------------------------------

    def _journal(self, conn: Connection) -> list[Metric]:
        by_status = journal_open_counts(conn)
        family = _gauge(
            "carebridge_hl7_journal_messages",
            "Journal rows not applied: received (backlog: not yet processed), failed (AE), rejected (AR)",
            labels=["status"],
        )
        for status in JOURNAL_OPEN_STATUSES:
            family.add_metric([status], by_status.get(status, (0, None))[0])
        oldest = by_status.get(JOURNAL_RECEIVED, (0, None))[1]
        age = max(0.0, time.time() - int(oldest) / 1e6) if oldest is not None else 0.0
        return [
            family,
            _gauge(
                "carebridge_hl7_journal_backlog",
                "Journal rows still 'received' (journaled, not yet processed)",
                by_status.get(JOURNAL_RECEIVED, (0, None))[0],
            ),
            _gauge(
                "carebridge_hl7_journal_oldest_received_age_seconds",
                "Age of the oldest row still 'received' (0 when none)",
                age,
            ),
        ]

    def _audit(self, conn: Connection) -> list[Metric]:
        length = chain_length(conn)
        cp = last_checkpoint(conn)
        return [
            _gauge("carebridge_audit_chain_length", "Events in the audit hash chain", length),
            _gauge(
                "carebridge_audit_last_checkpoint_seq",
                "Chain position of the last signed checkpoint (0 when none)",
                cp[0] if cp else 0,
            ),
            _gauge(
                "carebridge_audit_last_checkpoint_timestamp_seconds",
                "Unix time of the last signed checkpoint (0 when none)",
                cp[1] / 1e6 if cp else 0.0,
            ),
        ]

    def _crm(self, conn: Connection) -> list[Metric]:
        head = _gauge("carebridge_crm_outbox_head_seq", "Highest change-feed seq per CRM", labels=["crm"])
        crm_ids = subscribed_crm_ids(conn)
        config = getattr(self.crm, "config", None)
        crm_ids.update(str(c) for c in getattr(config, "clients", {}) or {})
        for crm_id, seq in outbox_heads(conn, sorted(crm_ids)).items():
            head.add_metric([crm_id], seq)
        backlog = _gauge(
            "carebridge_crm_webhook_backlog",
            "Feed events after an active subscription's saved cursor (not yet delivered; the dispatcher "
            "saves its cursor at most every 0.5 s)",
            labels=["crm", "subscription"],
        )
        age = _gauge(
            "carebridge_crm_webhook_oldest_pending_age_seconds",
            "How long the oldest undelivered event of an active subscription has waited",
            labels=["crm", "subscription"],
        )
        now = time.time()
        for crm_id, sub_id, count, oldest in webhook_backlogs(conn):
            backlog.add_metric([crm_id, sub_id], count)
            age.add_metric([crm_id, sub_id], max(0.0, now - int(oldest) / 1e6) if oldest is not None else 0.0)
        dead = _gauge(
            "carebridge_crm_dead_letters",
            "Webhook events given up on and not yet redelivered, per subscription",
            labels=["crm", "subscription"],
        )
        for crm_id, sub_id, count in dead_letter_counts(conn):
            dead.add_metric([crm_id, sub_id], count)
        his = _gauge(
            "carebridge_crm_his_booking_outbox",
            "CRM booking requests (SIU^S12 to the HIS) waiting for the HIS (pending) or given up (failed)",
            labels=["status"],
        )
        for status, count in his_outbox_counts(conn).items():
            his.add_metric([status], count)
        return [head, backlog, age, dead, his]


def ops_collector(app_state: Any, registry: CollectorRegistry, runtime: Runtime) -> OpsCollector:
    """The app's collector, registered on its registry on first use (one per app, like HttpMetrics)."""
    collector = getattr(app_state, "ops_metrics", None)
    if not isinstance(collector, OpsCollector):
        collector = OpsCollector.for_runtime(runtime)
        registry.register(collector)
        from gateway.audit_metrics import AnchorCollector  # issue #18: anchors that did not leave

        registry.register(AnchorCollector(runtime.audit))
        app_state.ops_metrics = collector
    return collector
