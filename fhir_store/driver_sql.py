"""Statements run on the DB-API cursor underneath SQLAlchemy, for the write hot path.

Why: an HL7 message or an audited request writes a dozen small rows.  Through
SQLAlchemy Core each ``Connection.execute`` costs ~110 µs of Python before
the driver is reached, and an ``executemany`` of 8 rows ~300 µs; the same
work as one multi-row ``INSERT ... VALUES (...), (...)`` on the driver
cursor costs ~55 µs, and an ``unnest`` of arrays less again for more rows
(``bench/mllp_ingest.py``, docs/benchmarks.md).  So the
few statements every write runs are rendered once per dialect and executed on
the raw cursor of the caller's SQLAlchemy :class:`~sqlalchemy.Connection`:
same connection, same transaction, nothing commits here.

Everything else (migrations, searches, admin paths) stays on SQLAlchemy.
Values must already be what the driver stores (``bytes`` for binary columns,
``int`` microseconds for instants); result rows come back as plain tuples.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Table
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


def run(conn: Connection, cur: Any, sql: str, params: Sequence[Any], *, many: bool = False) -> None:
    """Execute on the driver, raising SQLAlchemy's exception classes like ``Connection.execute``.

    Callers (``FhirStore.transact``'s retry loop, the journal's duplicate check) catch
    ``sqlalchemy.exc.IntegrityError`` / ``DBAPIError``; a lost connection is invalidated
    so the pool does not hand it out again.
    """
    dbapi = conn.dialect.loaded_dbapi
    try:
        if many:
            cur.executemany(sql, params)
        else:
            cur.execute(sql, params)
    except dbapi.Error as exc:
        disconnected = conn.dialect.is_disconnect(exc, conn.connection.dbapi_connection, cur)
        if disconnected:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql, params, exc, dbapi.Error, connection_invalidated=disconnected, dialect=conn.dialect
        ) from exc


def _array_type(column: Any) -> str:
    """The PostgreSQL array element type for a column (used to cast ``unnest`` parameters)."""
    kind = type(column.type).__name__
    if kind in ("BigInteger",) or "BIGINT" in str(column.type).upper():
        return "bigint"
    if kind in ("Integer", "SmallInteger"):
        return "integer"
    if kind == "Boolean":
        return "boolean"
    if kind == "LargeBinary":
        return "bytea"
    return "text"


class BulkInsert:
    """Insert many rows (tuples in ``columns`` order) with one statement whose text never varies.

    PostgreSQL: ``INSERT ... SELECT * FROM unnest(%s::text[], %s::bigint[], ...)`` -- one
    array parameter per column, so the statement is prepared once whatever the row
    count (a multi-row ``VALUES`` list would be a new statement text, parsed and
    prepared again, for every row count).  SQLite: the driver's C ``executemany``.
    """

    def __init__(self, table: Table, columns: Sequence[str], *, suffix: str = "") -> None:
        self.table = table.name
        self.columns = tuple(columns)
        tail = f" {suffix}" if suffix else ""
        names = ", ".join(self.columns)
        casts = ", ".join(f"%s::{_array_type(table.c[name])}[]" for name in self.columns)
        self.postgresql = f"INSERT INTO {self.table} ({names}) SELECT * FROM unnest({casts}){tail}"
        marks = ", ".join("?" for _ in self.columns)
        self.sqlite = f"INSERT INTO {self.table} ({names}) VALUES ({marks}){tail}"

    def execute(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        cur = cursor(conn)
        try:
            if conn.dialect.name == "sqlite":
                run(conn, cur, self.sqlite, rows, many=True)
            else:
                run(conn, cur, self.postgresql, [list(column) for column in zip(*rows, strict=True)])
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

    def _run(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        sql, names = self._render(conn.dialect.name)
        cur = cursor(conn)
        try:
            run(conn, cur, sql, [params[name] for name in names])
        except BaseException:
            cur.close()
            raise
        return cur

    def first(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        cur = self._run(conn, params)
        try:
            row = cur.fetchone()
            return None if row is None else tuple(row)
        finally:
            cur.close()

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        cur = self._run(conn, params)
        try:
            return [tuple(row) for row in cur.fetchall()]
        finally:
            cur.close()

    def rowcount(self, conn: Connection, params: Mapping[str, Any]) -> int:
        cur = self._run(conn, params)
        try:
            return int(cur.rowcount)
        finally:
            cur.close()
