"""Statements run on the DB-API cursor underneath SQLAlchemy, for the write hot path.

Why: an HL7 message or an audited request writes a dozen small rows.  Through
SQLAlchemy Core each ``Connection.execute`` costs ~110 µs of Python before
the driver is reached, and an ``executemany`` of 8 rows ~300 µs; the same
work as one multi-row ``INSERT ... VALUES (...), (...)`` on the driver
cursor costs ~55 µs, and a ``COPY`` less again (``BulkInsert``).  So the
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
    """Insert many rows (tuples in ``columns`` order) in one round trip.

    PostgreSQL: ``COPY table (columns) FROM STDIN`` -- measured cheapest in Python CPU
    and wall time for the 2-15 rows per table a write produces (13 + 2 rows: COPY
    ~230 µs, one multi-row ``VALUES`` ~320-380 µs and a new statement text per row
    count, ``unnest`` of arrays ~440 µs, ``executemany`` ~610-700 µs).  Unique and
    trigger checks apply to COPY as to INSERT.  SQLite: the driver's C ``executemany``.
    """

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.table = table.name
        self.columns = tuple(columns)
        names = ", ".join(self.columns)
        self.copy_sql = f"COPY {self.table} ({names}) FROM STDIN"
        marks = ", ".join("?" for _ in self.columns)
        self.sqlite = f"INSERT INTO {self.table} ({names}) VALUES ({marks})"

    def execute(self, conn: Connection, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        cur = cursor(conn)
        try:
            if conn.dialect.name == "sqlite":
                run(conn, cur, self.sqlite, rows, many=True)
                return
            try:
                with cur.copy(self.copy_sql) as copy:
                    for row in rows:
                        copy.write_row(row)
            except conn.dialect.loaded_dbapi.Error as exc:
                raise _translated(conn, cur, self.copy_sql, rows, exc) from exc
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
