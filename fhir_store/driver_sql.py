"""Statements run on the DB-API cursor underneath SQLAlchemy, for the write hot path.

Why: an HL7 message or an audited request writes a dozen small rows, and
SQLAlchemy Core adds per-statement Python overhead (compiling, parameter
processing, result wrapping) that dominates such a small write.  One
multi-row ``INSERT ... VALUES (...), (...)`` on the driver cursor, or the
rows of all tables as one statement (``MultiInsert``), avoids most of it
(docs/benchmarks.md, "Design figures behind module choices").  So the
few statements every write runs are rendered once per dialect and executed on
the raw cursor of the caller's SQLAlchemy :class:`~sqlalchemy.Connection`:
same connection, same transaction, nothing commits here.

Everything else (migrations, searches, admin paths) stays on SQLAlchemy.
Values must already be what the driver stores (``bytes`` for binary columns,
``int`` microseconds for instants); result rows come back as plain tuples.
"""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import orjson
from sqlalchemy import Boolean, Connection, Integer, LargeBinary, Table
from sqlalchemy.exc import DBAPIError


def _placeholder(dialect: str) -> str:
    return "?" if dialect == "sqlite" else "%s"


def cursor(conn: Connection) -> Any:
    """A cursor on the DB-API connection that ``conn`` (and its transaction) uses.

    Begins ``conn``'s transaction first if nothing has (what SQLAlchemy's autobegin
    would do on its first statement), so driver-level statements never run outside
    the caller's transaction -- on SQLite that also issues the ``BEGIN IMMEDIATE``
    of a write connection (fhir_store.database).
    """
    if not conn.in_transaction():
        conn.begin()
    return conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]


_T = TypeVar("_T")
_SHARED_CURSOR = "carebridge_driver_cursor"


def shared_cursor(conn: Connection) -> Any:
    """A cursor kept with the pooled DB-API connection, for statements that finish at once.

    Why: creating a psycopg cursor (adapter maps, result state) is a sizeable
    part of a small prepared statement's client CPU, and an HL7 message runs
    a dozen of them (docs/benchmarks.md, "Design figures").  Only
    :class:`DriverQuery` uses it (on PostgreSQL), and each of its calls reads
    what it needs before returning, so no caller ever holds
    it; psycopg discards an unread rest at the next execute.  Keyed by the DB-API
    connection itself: a reconnect after invalidation gets a new one.
    """
    if not conn.in_transaction():
        conn.begin()
    dbapi_connection = conn.connection.dbapi_connection
    info = conn.connection.info
    cached = info.get(_SHARED_CURSOR)
    if cached is None or cached[0] is not dbapi_connection:
        cached = (dbapi_connection, dbapi_connection.cursor())  # type: ignore[union-attr]
        info[_SHARED_CURSOR] = cached
    return cached[1]


def _translated(conn: Connection, cur: Any, sql: str, params: Any, exc: Any) -> Exception:
    """SQLAlchemy's exception for a driver error, invalidating a lost connection."""
    disconnected = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, cur)
    if disconnected:
        conn.invalidate(exc)
    dbapi = conn.dialect.loaded_dbapi
    translated: Exception = DBAPIError.instance(
        sql, params, exc, dbapi.Error, connection_invalidated=disconnected, dialect=conn.dialect
    )
    return translated


def run(conn: Connection, cur: Any, sql: str, params: Sequence[Any], *, many: bool = False) -> None:
    """Execute on the driver, raising SQLAlchemy's exception classes like ``Connection.execute``.

    Callers (``FhirStore.transact``'s retry loop, the journal's duplicate check) catch
    ``sqlalchemy.exc.IntegrityError`` / ``DBAPIError``; a lost connection is invalidated
    so the pool does not hand it out again.
    """
    try:
        if many:
            cur.executemany(sql, params)
        else:
            cur.execute(sql, params)
    except conn.dialect.loaded_dbapi.Error as exc:
        raise _translated(conn, cur, sql, params, exc) from exc


class BulkInsert:
    """Rows (tuples in ``columns`` order) for one table; sent by :class:`MultiInsert`."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.table = table.name
        self.columns = tuple(columns)
        names = ", ".join(self.columns)
        marks = ", ".join("?" for _ in self.columns)
        self.sqlite = f"INSERT INTO {self.table} ({names}) VALUES ({marks})"
        kinds = [table.c[name].type for name in self.columns]
        self.binary = tuple(i for i, kind in enumerate(kinds) if isinstance(kind, LargeBinary))
        selected = ", ".join(_from_json(i, kind) for i, kind in enumerate(kinds))
        self.postgres_part = (
            f"INSERT INTO {self.table} ({names}) SELECT {selected} FROM jsonb_array_elements(%s::jsonb) r"
        )

    def json_rows(self, rows: Sequence[Sequence[Any]]) -> str:
        """The rows as one JSON array of arrays; bytes go as base64 (JSON has no binary)."""
        if self.binary:
            binary = self.binary
            rows = [
                [
                    b2a_base64(v, newline=False).decode() if i in binary and v is not None else v
                    for i, v in enumerate(r)
                ]
                for r in rows
            ]
        return orjson.dumps(rows).decode()

    def execute(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        MultiInsert((self,)).execute(conn, {self: rows})


def _from_json(index: int, kind: Any) -> str:
    if isinstance(kind, LargeBinary):
        return f"decode(r->>{index}, 'base64')"
    if isinstance(kind, Boolean):
        return f"(r->>{index})::boolean"
    if isinstance(kind, Integer):  # BigInteger is an Integer
        return f"(r->>{index})::bigint"
    return f"r->>{index}"


class MultiInsert:
    """Rows for several tables in one round trip, inside the caller's transaction.

    PostgreSQL: one statement, a data-modifying CTE per table reading its rows from
    a ``jsonb`` array parameter (https://www.postgresql.org/docs/15/queries-with.html#QUERIES-WITH-MODIFYING).
    One fixed text, so psycopg prepares it once, and one round trip where a
    ``COPY`` per table would take two per table (docs/benchmarks.md, "Design
    figures").  Unique checks and triggers apply as to any INSERT.  SQLite:
    the driver's C ``executemany`` per table, in order.
    """

    def __init__(self, targets: Sequence[BulkInsert]) -> None:
        self.targets = tuple(targets)
        parts = ",\n".join(f"t{n} AS ({t.postgres_part})" for n, t in enumerate(self.targets))
        self.postgres = f"WITH {parts}\nSELECT 1"

    def execute(self, conn: Connection, rows: Mapping[BulkInsert, Sequence[Sequence[Any]]]) -> None:
        if not any(rows.get(t) for t in self.targets):
            return
        cur = cursor(conn)
        try:
            if conn.dialect.name == "sqlite":
                for target in self.targets:
                    if rows.get(target):
                        run(conn, cur, target.sqlite, rows[target], many=True)
            else:
                run(conn, cur, self.postgres, [t.json_rows(rows.get(t) or ()) for t in self.targets])
        finally:
            cur.close()


class DriverQuery:
    """A fixed statement with named parameters, rendered per dialect (``:name`` in the source text)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._rendered: dict[str, tuple[str, tuple[str, ...]]] = {}

    def _render(self, dialect: str) -> tuple[str, tuple[str, ...]]:
        rendered = self._rendered.get(dialect)
        if rendered is None:
            names: list[str] = []
            out: list[str] = []
            i = 0
            text = self.text
            while i < len(text):
                if text.startswith("::", i):  # a PostgreSQL cast, not a parameter
                    out.append("::")
                    i += 2
                elif text[i] == ":" and i + 1 < len(text) and (text[i + 1].isalpha() or text[i + 1] == "_"):
                    j = i + 1
                    while j < len(text) and (text[j].isalnum() or text[j] == "_"):
                        j += 1
                    names.append(text[i + 1 : j])
                    out.append(_placeholder(dialect))
                    i = j
                else:
                    out.append(text[i])
                    i += 1
            rendered = ("".join(out), tuple(names))
            self._rendered[dialect] = rendered
        return rendered

    def _run(self, conn: Connection, params: Mapping[str, Any], consume: Callable[[Any], _T]) -> _T:
        sql, names = self._render(conn.dialect.name)
        values = [params[name] for name in names]
        if conn.dialect.name == "sqlite":  # a cursor of its own, closed (its statement reset) at once
            cur = cursor(conn)
            try:
                run(conn, cur, sql, values)
                return consume(cur)
            finally:
                cur.close()
        cur = shared_cursor(conn)
        run(conn, cur, sql, values)
        return consume(cur)

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        row = self._run(conn, params, lambda cur: cur.fetchone())
        return None if row is None else tuple(row)

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return self._run(conn, params, lambda cur: [tuple(row) for row in cur.fetchall()])

    def rowcount(self, conn: Connection, params: Mapping[str, Any]) -> int:
        return self._run(conn, params, lambda cur: int(cur.rowcount))
