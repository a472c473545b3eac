"""Metrics of the audit anchors (issue #18 item 1): checkpoints that could not leave the database.

Why: an anchor endpoint that stopped answering, or a checkpoint the timer could
not write, weakens the evidence against truncation without failing any request
(by design: anchoring never blocks an audited write).  Monitoring must see it:
alert on any increase (docs/operations.md, "Audit anchors and database roles").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from audit import AuditHook


class AnchorCollector(Collector):
    """Counters of the process's audit checkpointer (zero when none is configured)."""

    def __init__(self, hook: AuditHook) -> None:
        self.hook = hook

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        checkpointer = self.hook.checkpointer
        posts = checkpointer.anchorer.post_failures if checkpointer is not None else 0
        ticks = checkpointer.failures if checkpointer is not None else 0
        yield CounterMetricFamily(
            "carebridge_audit_anchor_post_failures",
            "Failed POSTs of audit checkpoints to CAREBRIDGE_AUDIT_ANCHOR_URL (each is retried)",
            value=posts,
        )
        yield CounterMetricFamily(
            "carebridge_audit_checkpoint_failures",
            "Time-based or shutdown audit checkpoints (or anchor file writes) that failed and were retried",
            value=ticks,
        )
