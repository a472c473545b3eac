"""Structured JSON logging (structlog) that never carries patient data.

Log lines carry ids (request id, message control id, resource ids), counts and
codes.  As a second line of defence a processor drops any event key that names
personal data and masks values that look like phone numbers, CCCD or BHYT
numbers, whatever key they hide under (ISO/IEC 27001 A.8.12, Decree 356 Art. 7).

Identical warning and error lines are collapsed (:class:`RepeatCollapser`): during
an outage a worker that fails the same way in a loop, or the event loop failing to
``accept()`` with EMFILE, would otherwise fill the disk with one line repeated; the
first line of a burst is written, the rest of the window is counted, and the next
line after the window carries ``repeated`` (how many were left out).  Monitoring
(A.8.16) still sees every failure as a count, and the log stays readable.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

_PHI_KEYS = frozenset(
    {
        "name",
        "family",
        "given",
        "phone",
        "telecom",
        "email",
        "address",
        "birthdate",
        "birth_date",
        "cccd",
        "bhyt",
        "identifier",
        "patient_name",
        "text",
        "raw",
        "body",
        "content",
        "resource",
    }
)
# +84/0-prefixed phones, 12-digit CCCD, 15-char BHYT (2 letters + 13 digits).
_PHI_PATTERNS = re.compile(r"(\+?84\d{8,10}|\b0\d{9,10}\b|\b\d{12}\b|\b[A-Z]{2}\d{13}\b)")


def drop_patient_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key.lower() in _PHI_KEYS:
            event_dict[key] = "[redacted]"
        elif isinstance(event_dict[key], str):
            event_dict[key] = _PHI_PATTERNS.sub("[redacted]", event_dict[key])
    return event_dict


REPEAT_WINDOW_S = 10.0
_COLLAPSED_LEVELS = frozenset({"warning", "error", "critical", "exception"})


class RepeatCollapser:
    """Lets the first of identical lines through per window and counts the rest.

    Lines are identical when their event text and level are (the values of their
    other keys may differ: a peer address, a journal id).  Only warnings and
    errors are collapsed; info lines are one per event by design.
    """

    def __init__(
        self,
        window_s: float = REPEAT_WINDOW_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 4096,
    ) -> None:
        self.window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], list[float | int]] = {}  # key -> [window start, left out]

    def admit(self, event: str, level: str) -> int | None:
        """None: leave this line out; else write it, with this many identical lines left out before it."""
        key = (event[:300], level)
        now = self._clock()
        with self._lock:
            state = self._seen.get(key)
            if state is not None and now - state[0] < self.window_s:
                state[1] += 1
                return None
            left_out = 0 if state is None else int(state[1])
            if state is None and len(self._seen) >= self._max_keys:
                self._seen.clear()  # a flood of distinct lines: start counting afresh
            self._seen[key] = [now, 0]
            return left_out

    def __call__(
        self, _logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        """The structlog processor (after ``add_log_level``)."""
        level = str(event_dict.get("level", method)).lower()
        if level not in _COLLAPSED_LEVELS:
            return event_dict
        left_out = self.admit(str(event_dict.get("event", "")), level)
        if left_out is None:
            raise structlog.DropEvent
        if left_out:
            event_dict["repeated"] = left_out
        return event_dict


class RepeatFilter(logging.Filter):
    """The same collapsing for records of the standard ``logging`` module (asyncio, uvicorn, SQLAlchemy).

    The key is the logger, the level and the first line of the message: asyncio's
    "socket.accept() out of system resource" names the socket on a second line.
    """

    def __init__(self, collapser: RepeatCollapser) -> None:
        super().__init__()
        self.collapser = collapser

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        first_line = str(record.getMessage()).split("\n", 1)[0]
        left_out = self.collapser.admit(f"{record.name}: {first_line}", record.levelname.lower())
        if left_out is None:
            return False
        if left_out:
            record.repeated = left_out
        return True


def configure_logging(level: str = "INFO") -> None:
    """One JSON format for every line the process writes.

    structlog events render directly; records of the standard ``logging``
    module (uvicorn, alembic, asyncio, SQLAlchemy, our own stdlib loggers) go
    through a :class:`structlog.stdlib.ProcessorFormatter` with the same
    processors, so they are JSON too and pass :func:`drop_patient_data` --
    a log shipper (and the no-PHI test) can rely on every line being an
    object.  Exceptions are rendered *before* the PHI processor so that a
    traceback quoting a bound parameter is masked as well.  Both paths share
    one :class:`RepeatCollapser`.
    """
    collapser = RepeatCollapser()
    numeric = getattr(logging, level.upper(), logging.INFO)
    stamp = structlog.processors.TimeStamper(fmt="iso", utc=True)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[
                structlog.contextvars.merge_contextvars,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.add_log_level,
                structlog.stdlib.ExtraAdder(allow=["repeated"]),
                stamp,
            ],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                drop_patient_data,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    handler.addFilter(RepeatFilter(collapser))
    logging.basicConfig(handlers=[handler], level=numeric, force=True)
    for noisy in ("uvicorn.access",):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            collapser,
            stamp,
            structlog.processors.format_exc_info,
            drop_patient_data,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
