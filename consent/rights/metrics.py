"""Prometheus gauge of open requests by type and clock state (Decree 356/2025/ND-CP Art. 5 monitoring).

``carebridge_privacy_requests_open{type, clock}`` with ``clock`` one of
``on-time | near-due | overdue``: computed at scrape time from the database,
so every process reports the same numbers.  Alert on ``clock="overdue" > 0``
(ISO/IEC 27001:2022 A.8.16 monitoring).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from consent.rights.model import REQUEST_TYPES

if TYPE_CHECKING:
    from consent.rights.service import RightsService

CLOCK_STATES = ("on-time", "near-due", "overdue")


class PrivacyClockCollector(Collector):
    def __init__(self, service: RightsService) -> None:
        self.service = service

    def collect(self) -> Iterator[Metric]:
        gauge = GaugeMetricFamily(
            "carebridge_privacy_requests_open",
            "Open data-subject requests by type and deadline state (Decree 356/2025 Art. 5)",
            labels=["type", "clock"],
        )
        counts = {(t, s): 0 for t in REQUEST_TYPES for s in CLOCK_STATES}
        try:
            now = self.service.now()
            for req in self.service.find(states=frozenset(CLOCK_STATES)):
                state = req.clock_state(self.service.calendar, now)[0]
                counts[(req.type, state)] += 1
        except Exception:  # a scrape must not fail because the database is down
            return
        for (kind, state), value in counts.items():
            gauge.add_metric([kind, state], value)
        yield gauge
