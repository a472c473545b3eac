"""Which database failures are the environment's (transient) and which are the message's, and the write health.

Why: a write that fails because the connection was cut, the disk is full or a
concurrent transaction won must not be stored as the message's final answer --
resent once the database is healthy, the same message succeeds.  Only a failure
caused by the content is final (issue #17).  The classification follows the
SQLSTATE classes of the SQL standard as PostgreSQL reports them
(https://www.postgresql.org/docs/current/errcodes-appendix.html):

* ``08`` connection exception (connection lost, refused),
* ``53`` insufficient resources (``53100`` disk full, ``53200`` out of memory,
  ``53300`` too many connections),
* ``57`` operator intervention (``57P01`` terminated by ``pg_terminate_backend``
  or a shutdown, ``57014`` statement timeout or cancel),
* ``40`` transaction rollback (serialization failure, deadlock),
* ``58`` system error (``58030`` I/O error);

and, for SQLite (https://www.sqlite.org/rescode.html), the result codes
``SQLITE_FULL``, ``SQLITE_IOERR*``, ``SQLITE_BUSY``/``SQLITE_LOCKED``,
``SQLITE_CANTOPEN`` and ``SQLITE_READONLY*`` (a volume remounted read-only), by
name when the driver gives it, else by message text.  A connection SQLAlchemy
reports as invalidated, a pool timeout and an ``OSError`` count too.

:class:`WriteHealth` remembers the last successful write and the last transient
failure of this process's store, for ``/readyz`` ("a recent successful commit").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from common import DatabaseTimeout

_PG_CLASSES = {"08": "connection", "53": "resources", "57": "interrupted", "40": "conflict", "58": "io"}

_SQLITE_NAMES = (
    ("SQLITE_FULL", "disk-full"),
    ("SQLITE_IOERR", "io"),
    ("SQLITE_BUSY", "locked"),
    ("SQLITE_LOCKED", "locked"),
    ("SQLITE_CANTOPEN", "unavailable"),
    ("SQLITE_READONLY", "read-only"),
)

_SQLITE_TEXTS = (
    ("database or disk is full", "disk-full"),
    ("disk i/o error", "io"),
    ("database is locked", "locked"),
    ("database table is locked", "locked"),
    ("unable to open", "unavailable"),
    ("readonly database", "read-only"),
)


def transient_kind(exc: BaseException) -> str | None:
    """A short name of the environmental cause (``disk-full``, ``connection``...), or None: not transient.

    The name goes to logs, metrics and the journal's ``error``; it never quotes the
    driver's message (which may hold statement parameters, i.e. patient data).
    """
    if isinstance(exc, PoolTimeout):
        return "pool-timeout"
    if isinstance(exc, DatabaseTimeout):  # a write cancelled by its statement timeout
        return "timeout"
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return "connection"
        orig = exc.orig
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
        if isinstance(sqlstate, str) and len(sqlstate) == 5:
            return _PG_CLASSES.get(sqlstate[:2])
        name = getattr(orig, "sqlite_errorname", None)
        if isinstance(name, str):
            for prefix, kind in _SQLITE_NAMES:
                if name.startswith(prefix):
                    return kind
        text = str(orig).lower()
        for fragment, kind in _SQLITE_TEXTS:
            if fragment in text:
                return kind
        if type(orig).__name__ == "OperationalError" and type(orig).__module__.startswith("psycopg"):
            return "connection"  # psycopg without a SQLSTATE: the server went away mid-statement
        return None
    if isinstance(exc, (OSError, TimeoutError)):
        return "io"
    return None


@dataclass(frozen=True, slots=True)
class WriteFailure:
    kind: str
    at: float  # time.monotonic()


class WriteHealth:
    """The last successful store write and the last transient write failure of this process.

    Thread-safe; written by :meth:`fhir_store.FhirStore.write_connection`, read by readiness.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.last_success: float | None = None
        self.last_failure: WriteFailure | None = None

    def now(self) -> float:
        return float(self._clock())

    def succeeded(self) -> None:
        with self._lock:
            self.last_success = self.now()

    def failed(self, exc: BaseException) -> None:
        kind = transient_kind(exc)
        if kind is None:
            return
        with self._lock:
            self.last_failure = WriteFailure(kind, self.now())

    def unresolved_failure(self, within_s: float) -> WriteFailure | None:
        """The last transient failure, if no write succeeded after it and it is under ``within_s`` old."""
        with self._lock:
            failure, success = self.last_failure, self.last_success
        if failure is None or (success is not None and success >= failure.at):
            return None
        return failure if self.now() - failure.at <= within_s else None
