"""HL7 ingest under environmental failures: retry, then a non-final AE; rate-limited duplicate audit events.

Why: HL7 v2 original mode (v2.5 ch. 2.9.1) has the sender resend a message
until it is accepted.  A write that failed because the database was cut off,
the disk was full or a concurrent transaction won (:func:`fhir_store.transient_kind`)
says nothing about the message: storing that AE as the message's final answer
would return it to every resend, so the sender could never get the message in
(issue #17).  Such a failure is tried again a few times here
(``CAREBRIDGE_HL7_TRANSIENT_RETRIES``); if it persists the sender gets AE 207
"temporary failure; please resend", the journal row (when it could be written)
stays ``received`` without an ACK, and the resend -- or ``carebridge hl7 replay``
-- applies the message once the database is healthy.  Only content errors are
stored as final answers.

A sender stuck on AE resends many times a minute; each duplicate delivery of a
settled message used to leave an AuditEvent.  :class:`DuplicateAudit` keeps one
event per message per ``CAREBRIDGE_HL7_DUPLICATE_AUDIT_INTERVAL_S`` carrying how
many deliveries it stands for (IHE BALP still sees every delivery, counted).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

from common import CarebridgeError
from fhir_store import transient_kind
from gateway.logging_setup import get_logger

log = get_logger("carebridge.ingest")

T = TypeVar("T")

#: Delay before the first retry; doubled for each further one.
RETRY_BASE_S = 0.1


class TemporaryFailure(CarebridgeError):
    """The database failed for an environmental reason: AE 207, never stored as the final answer."""

    http_status = 503
    issue_code = "transient"
    hl7_error_code = "207"

    def __init__(self, kind: str) -> None:
        super().__init__(f"temporary database failure ({kind}); the message was not applied, please resend")
        self.kind = kind


def with_retries(
    attempt: Callable[[], T],
    retries: int,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``attempt()``, run again up to ``retries`` times while it fails for an environmental reason."""
    for n in range(retries + 1):
        try:
            return attempt()
        except Exception as exc:
            kind = transient_kind(exc)
            if kind is None or n == retries:
                raise
            log.info("hl7 write retried", kind=kind, attempt=n + 1)
            sleep(RETRY_BASE_S * 2**n)
    raise AssertionError("unreachable")  # pragma: no cover


class DuplicateAudit:
    """Admits one duplicate-delivery audit event per journal row per interval, with the count since the last.

    In memory and per process (bounded: the least recently seen rows are
    forgotten first); a count not yet reported when the process stops is lost,
    the ``carebridge_hl7_duplicate_deliveries_total`` counter still has it.
    """

    MAX_ROWS = 10_000

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._rows: OrderedDict[int, tuple[float, int]] = OrderedDict()  # id -> (last event, unreported)

    def admit(self, journal_id: int) -> int | None:
        """The number of deliveries the event to write now stands for, or None: write none now."""
        now = self._clock()
        with self._lock:
            last = self._rows.pop(journal_id, None)
            if last is not None and now - last[0] < self.interval_s:
                self._rows[journal_id] = (last[0], last[1] + 1)
                return None
            self._rows[journal_id] = (now, 0)
            while len(self._rows) > self.MAX_ROWS:
                self._rows.popitem(last=False)
            return 1 if last is None else last[1] + 1
