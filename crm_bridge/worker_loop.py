"""The background-thread skeleton the CRM workers share: run a round, sleep until woken, back off.

Why one skeleton: the webhook dispatcher (:mod:`crm_bridge.delivery`) and the
HIS booking sender (:mod:`crm_bridge.booking`) each drain an outbox table in a
daemon thread, and must behave alike under load and under failure:

* a round that did work is followed by the next one at once (drain a backlog
  without sleeping between batches), unless the worker says it left nothing
  behind (``backlog``): then it waits to be woken, instead of paying a whole
  round to find out that nothing came in meanwhile -- after a pause of
  ``settle_s``, so that under a steady stream the next round takes several
  items at once rather than one per wake (the first item after an idle spell
  still goes at once);
* an idle worker sleeps until :attr:`WorkerLoop.wake` is set — by the store
  hook or the API that just wrote a row, so delivery starts without waiting —
  or until the poll interval passes, which picks up rows whose retry time has
  come and rows written by another process;
* a round that raises is logged by exception class only (a message could quote
  patient data) and never kills the thread;
* :meth:`WorkerLoop.stop` interrupts the sleep, so shutdown does not wait a
  poll interval, and the worker can check :attr:`WorkerLoop.stopping` between
  items of a long round.

Failed sends are retried with :func:`backoff_s`, exponential with jitter, so
workers that failed together (a receiver outage) do not all retry together.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

#: How long a stopping worker's thread is waited for before the process moves on.
JOIN_TIMEOUT_S = 30.0


def backoff_s(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with 'equal jitter': uniform in [d/2, d], d = min(cap, base·2^(n-1))."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return random.uniform(delay / 2, delay)


class WorkerLoop:
    """Runs ``run_once`` in a daemon thread until stopped; see the module docstring for the rules.

    ``run_once`` returns how many items it handled (0: idle).  ``idle_wait_s``
    is called before every sleep, so a worker whose settings change (tests do
    that) sleeps by the new interval.
    """

    def __init__(
        self,
        name: str,
        run_once: Callable[[], int],
        *,
        idle_wait_s: Callable[[], float],
        log: logging.Logger,
        failure_message: str,
        backlog: Callable[[], bool] | None = None,
        settle_s: float = 0.0,
    ) -> None:
        self.name = name
        self._backlog = backlog
        self._settle_s = settle_s
        self.wake = threading.Event()
        self._run_once = run_once
        self._idle_wait_s = idle_wait_s
        self._log = log
        self._failure_message = failure_message
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started = False  # start() was called in this process (readiness: it should be running)
        self.round_started: float | None = None  # time.monotonic() of the round running now, if any

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called (until the next :meth:`start`): end the round early."""
        return self._stop.is_set()

    @property
    def running(self) -> bool:
        """The thread is alive (readiness: a dead thread delivers nothing)."""
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self.started = True
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=JOIN_TIMEOUT_S)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.round_started = time.monotonic()
            try:
                busy = self._run_once()
            except Exception as exc:  # keep the worker alive; no payloads in logs
                self._log.warning(self._failure_message, type(exc).__name__)
                busy = 0
            finally:
                self.round_started = None
            if busy and self._backlog is not None and not self._backlog() and self._settle_s > 0:
                self._stop.wait(self._settle_s)
            if not busy or (self._backlog is not None and not self._backlog()):
                self.wake.wait(self._idle_wait_s())
                self.wake.clear()
