"""The statements of the chain writer, run on the DB-API cursor of the caller's connection.

Why not SQLAlchemy Core: an audited create runs a few small statements
(lock, head, insert) and a buffered batch of read events many rows, and
SQLAlchemy's per-statement and per-row Python overhead dominates both.  The
statements here are fixed, so they are rendered once per dialect and executed
on the raw cursor -- same connection, same transaction, nothing commits here
(:mod:`fhir_store.driver_sql`).

How rows are inserted depends on the backend, chosen by measurement
(docs/benchmarks.md, "Design figures behind module choices"):

* SQLite: multi-row INSERTs of power-of-two sizes (:meth:`RowInsert.write`).
  ``executemany`` releases the GIL around every row, twice per event with
  the key rows, for no CPU saving per event;
* PostgreSQL, up to :data:`PG_INSERT_ROWS` rows (a create's event): one
  multi-row INSERT.  psycopg caches the conversion of a query only when it
  has at most 50 parameters, so 16 columns x 3 rows is the most that stays
  cached; a larger multi-row INSERT is re-parsed in Python on every
  execution;
* PostgreSQL, larger batches (the read appender): ``COPY ... FROM STDIN``
  in binary format: no query text to parse at all.

The writer runs lock, head and inserts on *one* cursor (:func:`lock_and_head`,
:meth:`RowInsert.write`): creating a psycopg cursor per statement costs client
CPU inside the write transaction.  A psycopg pipeline for lock and head saves
nothing (its bookkeeping costs what the round trip does); instead they are
one statement, the server-side function ``carebridge_audit_head``
(migration 0008), and an event goes in with its search keys in one more
(:class:`PairInsert`): two statements per audited change on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from sqlalchemy import BigInteger, Boolean, Connection, LargeBinary, Table

from fhir_store import driver_cursor

GENESIS: Final = b"\x00" * 32
# pg_advisory_xact_lock key: ASCII "cbaudit\0" (any constant unique to this lock will do)
CHAIN_LOCK_KEY: Final = 0x6362617564697400
#: psycopg caches the conversion of a query with at most this many parameters
PSYCOPG_CACHED_PARAMS: Final = 50
#: SQLite: the most rows per INSERT (x 16 columns stays far below SQLite's 32766 parameters)
SQLITE_CHUNK: Final = 64
#: PostgreSQL: up to 16 columns x 3 = 48 <= psycopg's 50
PG_INSERT_ROWS: Final = 3

_LOCK = "SELECT pg_advisory_xact_lock(%s)"
_LOCK_AND_HEAD = "SELECT seq, hash FROM carebridge_audit_head(%s)"  # migration 0008
_HEAD = "SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1"  # no parameters: both dialects


def lock_and_head(cur: Any, dialect: str) -> tuple[int, bytes]:
    """Take the chain lock (PostgreSQL), then read ``(seq, hash)`` of the last event.

    Under READ COMMITTED the head read must start after the lock is granted, so
    that its snapshot sees the previous holder's commit: on PostgreSQL both
    happen in ``carebridge_audit_head`` (see migration 0008), one statement.
    ``(0, GENESIS)`` for an empty chain.
    """
    if dialect == "postgresql":
        cur.execute(_LOCK_AND_HEAD, (CHAIN_LOCK_KEY,))
    else:
        cur.execute(_HEAD)
    row = cur.fetchone()
    return (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))


def lock_chain(conn: Connection) -> None:
    """Serialize appends (PostgreSQL); SQLite callers must be in a BEGIN IMMEDIATE transaction."""
    if conn.dialect.name == "postgresql":
        cur = driver_cursor(conn)
        try:
            cur.execute(_LOCK, (CHAIN_LOCK_KEY,))
        finally:
            cur.close()


def head(conn: Connection) -> tuple[int, bytes]:
    """``(seq, hash)`` of the last event, without taking the lock."""
    cur = driver_cursor(conn)
    try:
        cur.execute(_HEAD)
        row = cur.fetchone()
    finally:
        cur.close()
    return (0, GENESIS) if row is None else (int(row[0]), bytes(row[1]))


def _pg_type(table: Table, name: str) -> str:
    kind = table.c[name].type
    if isinstance(kind, BigInteger):
        return "int8"
    if isinstance(kind, Boolean):
        return "bool"
    return "bytea" if isinstance(kind, LargeBinary) else "text"


class RowInsert:
    """Insert tuples into ``table`` (values as the driver stores them) the cheapest way per backend."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        names = ", ".join(self.columns)
        self._sqlite = f"INSERT INTO {table.name} ({names}) VALUES ({', '.join('?' for _ in self.columns)})"
        self._sqlite_one = "(" + ", ".join("?" for _ in self.columns) + ")"
        self._sqlite_many: dict[int, str] = {}
        one = "(" + ", ".join("%s" for _ in self.columns) + ")"
        self._pg_values = [
            f"INSERT INTO {table.name} ({names}) VALUES {', '.join([one] * n)}"
            for n in range(PG_INSERT_ROWS + 1)
        ]
        self._pg_copy = f"COPY {table.name} ({names}) FROM STDIN (FORMAT BINARY)"
        self._pg_types = [_pg_type(table, name) for name in self.columns]
        self._pg_head = f"INSERT INTO {table.name} ({names}) VALUES "
        self._pg_one = one

    def pg_values(self, count: int) -> str:
        """``INSERT INTO table (...) VALUES (%s, ...), ...`` for ``count`` rows (PostgreSQL)."""
        return self._pg_head + ", ".join([self._pg_one] * count)

    def write(self, cur: Any, dialect: str, rows: Sequence[Sequence[Any]]) -> None:
        """Insert ``rows`` on the DB-API cursor ``cur`` (in its connection's transaction)."""
        if not rows:
            return
        if dialect == "sqlite":
            self._sqlite_write(cur, rows)
        elif len(rows) <= PG_INSERT_ROWS:
            cur.execute(self._pg_values[len(rows)], [value for row in rows for value in row])
        else:
            with cur.copy(self._pg_copy) as copy:
                copy.set_types(self._pg_types)
                for row in rows:
                    copy.write_row(row)

    def _sqlite_write(self, cur: Any, rows: Sequence[Sequence[Any]]) -> None:
        """Multi-row INSERTs of power-of-two sizes up to :data:`SQLITE_CHUNK` rows.

        Why not ``executemany``: sqlite3 releases the GIL around every row's
        step, and with request threads waiting for the GIL each release of the
        appender became a hand-over and a wait to get it back.  A chunk is one
        step.  Power-of-two sizes keep the statements few (sqlite3 caches them).
        """
        start, total = 0, len(rows)
        while start < total:
            size = min(SQLITE_CHUNK, 1 << ((total - start).bit_length() - 1))
            sql = self._sqlite_many.get(size)
            if sql is None:
                sql = self._sqlite_many[size] = (
                    self._sqlite.rpartition(" VALUES ")[0] + " VALUES " + ", ".join([self._sqlite_one] * size)
                )
            cur.execute(sql, [value for row in rows[start : start + size] for value in row])
            start += size


class PairInsert:
    """Rows of a table and their rows in a second one; on PostgreSQL one statement when small.

    An audited create on PostgreSQL inserts one event and its one or two key
    rows (:mod:`audit.schema`): as two statements that would be one more
    round trip and more psycopg CPU inside the write transaction, so
    up to :data:`PSYCOPG_CACHED_PARAMS` parameters both go in one statement
    (``WITH e AS (INSERT ...) INSERT ...``; PostgreSQL runs a data-modifying
    WITH exactly once).  Larger sets take :meth:`RowInsert.write` for each.
    """

    def __init__(self, first: RowInsert, second: RowInsert) -> None:
        self.first = first
        self.second = second
        self._pg: dict[tuple[int, int], str] = {}

    def write(
        self, cur: Any, dialect: str, rows: Sequence[Sequence[Any]], more: Sequence[Sequence[Any]]
    ) -> None:
        """Insert ``rows`` into the first table and ``more`` into the second, on ``cur``."""
        params = len(rows) * len(self.first.columns) + len(more) * len(self.second.columns)
        if dialect != "postgresql" or not rows or not more or params > PSYCOPG_CACHED_PARAMS:
            self.first.write(cur, dialect, rows)
            self.second.write(cur, dialect, more)
            return
        shape = (len(rows), len(more))
        query = self._pg.get(shape)
        if query is None:
            query = f"WITH e AS ({self.first.pg_values(len(rows))}) {self.second.pg_values(len(more))}"
            self._pg[shape] = query
        cur.execute(query, [value for row in (*rows, *more) for value in row])
