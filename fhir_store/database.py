"""Engine construction for the two supported backends.

SQLite (the embedded default) runs in WAL mode with a busy timeout so readers
never block the single writer; writes take the lock up front (``BEGIN
IMMEDIATE``) so a read-then-write transaction cannot deadlock or lose a
conditional-create race.  PostgreSQL uses psycopg 3 with a connection pool and
relies on unique constraints plus transaction retry for races.

A SQLite database file is created 0600 in a directory created 0700
(:func:`private_sqlite_file`): it holds the OAuth clients, the audit trail and
sealed patient data, so other local accounts must not read it (issue #16; ISO/IEC
27001:2022 A.8.3).  SQLite gives its ``-wal`` and ``-shm`` files the mode of the
database file.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url


def normalize_url(database_url: str) -> str:
    """Accept ``postgresql://`` and ``postgres://`` and pin the psycopg 3 driver."""
    if database_url.startswith("postgres://"):
        database_url = "postgresql://" + database_url[len("postgres://") :]
    if database_url.startswith("postgresql://"):
        database_url = "postgresql+psycopg://" + database_url[len("postgresql://") :]
    return database_url


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(database_url: str, *, pool_size: int = 16, statement_timeout_ms: int | None = None) -> Engine:
    """An engine with ``pool_size`` connections (and as many overflow).

    ``statement_timeout_ms`` (PostgreSQL only) makes the server cancel any statement of
    this engine's connections that runs longer (libpq ``options``, set once per
    connection, so no statement pays for it): the pool that serves HTTP reads has it,
    the ones of migrations, backups and HL7 ingest never do (issue #17).
    """
    url = make_url(normalize_url(database_url))
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:" and not url.database.startswith("file:"):
            private_sqlite_file(Path(url.database))
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )
        _configure_sqlite(engine)
        return engine
    connect_args = (
        {} if statement_timeout_ms is None else {"options": f"-c statement_timeout={statement_timeout_ms:d}"}
    )
    return create_engine(
        url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=False, connect_args=connect_args
    )


def private_sqlite_file(path: Path) -> None:
    """Create ``path`` (and missing parents) owner-only; narrow an existing file and its WAL files."""
    missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        with contextlib.suppress(OSError):  # absent, or owned by someone else: leave it
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)


def writer(engine: Engine) -> Engine:
    """The engine to use for a read-then-write transaction.

    On SQLite a deferred transaction that reads and then writes can fail at once with
    "database is locked" when another connection writes meanwhile (the lock upgrade is
    not retried); ``BEGIN IMMEDIATE`` takes the write lock up front and waits for it.
    """
    return _with_options(engine, sqlite_begin="IMMEDIATE") if is_sqlite(engine) else engine


def reader(engine: Engine) -> Engine:
    """The engine for a block that only reads: no transaction around it on PostgreSQL.

    Why: a block opened with ``engine.connect()`` that only reads ends in a ROLLBACK,
    and psycopg answers every ROLLBACK by dropping the connection's prepared
    statements (``DEALLOCATE ALL``).  A poller doing that many times a second (the
    webhook dispatcher) would leave the pooled connections the ingest lanes use
    without their prepared statements, so the big write statements would be parsed
    and planned again and again.  Each statement of an autocommit block sees committed data
    like READ COMMITTED; blocks that need one snapshot must not use this.  SQLite
    is left as it is (its begin is configured below).
    """
    return engine if is_sqlite(engine) else _with_options(engine, isolation_level="AUTOCOMMIT")


def _with_options(engine: Engine, **options: str) -> Engine:
    """``engine.execution_options(**options)``, made once per engine and option set.

    Why: every ``execution_options`` call builds a new option engine and registers
    its event listeners, which costs more CPU than the short query it serves, and
    the webhook dispatcher asks for one several times per pass.
    """
    key = tuple(sorted(options.items()))
    cached: dict[tuple[tuple[str, str], ...], Engine] | None = getattr(engine, _CACHE_ATTRIBUTE, None)
    if cached is None:
        cached = {}
        setattr(engine, _CACHE_ATTRIBUTE, cached)  # a plain cycle with the engine: collected with it
    if key not in cached:
        cached[key] = engine.execution_options(**options)
    return cached[key]


_CACHE_ATTRIBUTE = "_carebridge_option_engines"


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")
