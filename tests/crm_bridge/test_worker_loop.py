"""The worker skeleton on its own: woken rounds, a failing round that does not kill it, prompt stop."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from crm_bridge.worker_loop import WorkerLoop, backoff_s


def _wait(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_wake_runs_a_round_without_waiting_for_the_poll(caplog: pytest.LogCaptureFixture) -> None:
    rounds: list[int] = []
    work = threading.Event()

    def run_once() -> int:
        rounds.append(1)
        if len(rounds) == 2:
            raise ValueError("patient Nguyễn Văn An")  # must not reach the log
        if work.is_set():
            work.clear()
            return 1
        return 0

    loop = WorkerLoop(
        "test-worker",
        run_once,
        idle_wait_s=lambda: 60.0,  # only a wake can start the next round in time
        log=logging.getLogger("test.worker_loop"),
        failure_message="round failed: %s",
    )
    with caplog.at_level(logging.WARNING, logger="test.worker_loop"):
        loop.start()
        try:
            _wait(lambda: len(rounds) == 1)
            loop.wake.set()  # round 2 raises; the thread survives and sleeps again
            _wait(lambda: len(rounds) == 2)
            work.set()
            loop.wake.set()  # round 3 does work, so round 4 follows at once
            _wait(lambda: len(rounds) == 4)
        finally:
            started = time.monotonic()
            loop.stop()
    assert time.monotonic() - started < 5, "stop must interrupt the idle sleep"
    assert loop.stopping
    assert [r.getMessage() for r in caplog.records] == ["round failed: ValueError"]


def test_backoff_grows_with_jitter_up_to_the_cap() -> None:
    for attempt in range(1, 12):
        delay = min(60.0, 2 ** (attempt - 1))
        assert delay / 2 <= backoff_s(attempt, 1.0, 60.0) <= delay


def _busy_worker(run_once: Callable[[], int], **options: Any) -> WorkerLoop:
    """A worker only a wake moves on once idle (the poll interval is a minute)."""
    return WorkerLoop(
        "test-worker",
        run_once,
        idle_wait_s=lambda: 60.0,
        log=logging.getLogger("test.worker_loop"),
        failure_message="round failed: %s",
        **options,
    )


def test_a_round_that_left_no_backlog_waits_for_the_next_wake() -> None:
    rounds: list[int] = []
    backlog = [True]

    def run_once() -> int:
        rounds.append(1)
        return 1  # always did work

    loop = _busy_worker(run_once, backlog=lambda: backlog[0])
    loop.start()
    try:
        _wait(lambda: len(rounds) >= 3)  # a backlog: rounds follow one another at once
        backlog[0] = False
        _wait(lambda: len(rounds) >= 5)
        time.sleep(0.2)
        settled = len(rounds)
        time.sleep(0.3)
        assert len(rounds) == settled, "without a backlog the worker must sleep until woken"
        loop.wake.set()
        _wait(lambda: len(rounds) == settled + 1)
    finally:
        loop.stop()


def test_a_settle_pause_lets_work_accumulate_under_a_steady_stream() -> None:
    rounds: list[float] = []

    def run_once() -> int:
        rounds.append(time.monotonic())
        return 1

    loop = _busy_worker(run_once, backlog=lambda: False, settle_s=0.2)
    loop.start()
    try:
        _wait(lambda: len(rounds) == 1)  # the first round runs at once
        loop.wake.set()  # woken during the pause: the next round still waits for it to end
        _wait(lambda: len(rounds) == 2)
        assert rounds[1] - rounds[0] >= 0.19
    finally:
        started = time.monotonic()
        loop.stop()
    assert time.monotonic() - started < 5, "stop must interrupt the pause"
