"""Identical warning/error lines are collapsed into one line with a ``repeated`` count (issue #17 item 4).

The webhook dispatcher wrote 782 identical lines in 40 s during an outage, and the event
loop's "socket.accept() out of system resource" grew the log by 169 MB in 75 s.  The
clock is injected: 1,000 lines over 35 simulated seconds with a 10 s window.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import MutableMapping
from typing import Any

import structlog

from gateway.logging_setup import RepeatCollapser, RepeatFilter, configure_logging


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_structlog(
    collapser: RepeatCollapser, clock: FakeClock, lines: list[tuple[str, str]]
) -> list[dict[str, Any]]:
    """Send (level, event) lines through a structlog pipeline with ``collapser``; the JSON written."""
    out = io.StringIO()
    logger = structlog.wrap_logger(
        structlog.PrintLogger(file=out),
        processors=[structlog.processors.add_log_level, collapser, structlog.processors.JSONRenderer()],
    )
    for i, (level, event) in enumerate(lines):
        clock.now = i * 0.035  # 1,000 lines over 35 s
        getattr(logger, level)(event, journal_id=i)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_a_thousand_identical_errors_become_a_few_lines_with_counts() -> None:
    clock = FakeClock()
    written = run_structlog(
        RepeatCollapser(10.0, clock=clock), clock, [("error", "webhook delivery failed")] * 1000
    )
    assert 2 <= len(written) <= 5
    assert all(line["event"] == "webhook delivery failed" for line in written)
    assert "repeated" not in written[0]
    assert all(line["repeated"] > 200 for line in written[1:])
    # every line is accounted for: written, or counted in the next written line
    last_window = 1000 - written[-1]["journal_id"] - 1
    assert len(written) + sum(line.get("repeated", 0) for line in written) + last_window == 1000


def test_distinct_events_levels_and_info_lines_are_not_collapsed() -> None:
    clock = FakeClock()
    lines = [("warning", "a"), ("error", "a"), ("warning", "b"), ("info", "hl7 message rejected")] * 50
    written = run_structlog(RepeatCollapser(10.0, clock=clock), clock, lines)
    keys = [(line["level"], line["event"]) for line in written]
    assert (
        keys.count(("warning", "a")) == 1
        and keys.count(("error", "a")) == 1
        and keys.count(("warning", "b")) == 1
    )
    assert keys.count(("info", "hl7 message rejected")) == 50  # one info line per event, by design


def test_the_event_loop_logger_is_collapsed_too() -> None:
    clock = FakeClock()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RepeatFilter(RepeatCollapser(10.0, clock=clock)))
    logger = logging.getLogger("test.asyncio.flood")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        for i in range(1000):
            clock.now = i * 0.035
            logger.error("socket.accept() out of system resource\nsocket: <fd=%d>", 9 + i % 3)
    finally:
        logger.removeHandler(handler)
    first_lines = [line for line in stream.getvalue().splitlines() if line.startswith("socket.accept()")]
    assert 2 <= len(first_lines) <= 5


def test_configure_logging_installs_the_collapser_on_both_paths(capsys: Any) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        configure_logging("INFO")
        log = structlog.get_logger("test.repeats")
        for _ in range(100):
            log.error("database unavailable", error_type="OperationalError")
            logging.getLogger("asyncio").error("socket.accept() out of system resource")
        for _ in range(3):
            log.info("hl7 message rejected", journal_id=1)
    finally:  # the suite runs with structlog's defaults: put them back
        structlog.reset_defaults()
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    lines: list[MutableMapping[str, Any]] = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    events = [str(line["event"]) for line in lines]
    assert events.count("database unavailable") == 1
    assert sum(1 for e in events if e.startswith("socket.accept()")) == 1
    assert events.count("hl7 message rejected") == 3
