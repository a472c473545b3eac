"""Driver-level statements run in the caller's transaction on both backends."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import IntegrityError

from fhir_store.database import make_engine, reader
from fhir_store.driver_sql import BulkInsert, DriverQuery, MultiInsert
from fhir_store.schema import identifier_claim, resource_version, search_string

_INSERT = BulkInsert(search_string, ("res_type", "res_id", "param", "norm", "exact"))
_BY_ID = DriverQuery(
    "SELECT param, exact FROM search_string WHERE res_type = :t AND res_id = :i ORDER BY param"
)


def _engine(database_url: str) -> Engine:
    return make_engine(database_url, pool_size=2)


def test_bulk_insert_spans_chunks_and_commits_with_the_transaction(database_url: str) -> None:
    engine = _engine(database_url)
    rows = [("Patient", "p1", f"name{n:03d}", "nguyen", "Nguyễn") for n in range(131)]
    with engine.begin() as conn:
        _INSERT.execute(conn, rows)
        assert len(_BY_ID.all(conn, {"t": "Patient", "i": "p1"})) == len(rows)
    with engine.connect() as conn:
        stored = conn.execute(select(search_string.c.exact).where(search_string.c.res_id == "p1")).all()
    assert len(stored) == len(rows) and {r[0] for r in stored} == {"Nguyễn"}
    engine.dispose()


def test_rollback_discards_driver_level_rows(database_url: str) -> None:
    engine = _engine(database_url)
    conn = engine.connect()
    trans = conn.begin()
    _INSERT.execute(conn, [("Patient", "p2", "name", "tran", "Trần")])
    trans.rollback()
    conn.close()
    with engine.connect() as conn:
        assert _BY_ID.first(conn, {"t": "Patient", "i": "p2"}) is None
    engine.dispose()


def test_bulk_insert_types_every_column_kind(database_url: str) -> None:
    """Integers, booleans, bytes and NULLs survive the JSON (PostgreSQL) and executemany (SQLite) paths."""
    engine = _engine(database_url)
    versions = BulkInsert(
        resource_version, ("res_type", "res_id", "version", "last_updated_us", "deleted", "method", "content")
    )
    rows = [
        ("Patient", "v1", 1, 1_790_000_000_000_001, False, "POST", b'{"a":"\xc3\xa9"}'),
        ("Patient", "v1", 2, 1_790_000_000_000_002, True, "DELETE", None),
    ]
    with engine.begin() as conn:
        versions.execute(conn, rows)
    with engine.connect() as conn:
        stored = conn.execute(
            select(
                resource_version.c.version,
                resource_version.c.last_updated_us,
                resource_version.c.deleted,
                resource_version.c.content,
            )
            .where(resource_version.c.res_id == "v1")
            .order_by(resource_version.c.version)
        ).all()
    assert [tuple(r) for r in stored] == [(1, rows[0][3], False, rows[0][6]), (2, rows[1][3], True, None)]
    engine.dispose()


def test_query_renders_named_parameters_and_keeps_casts() -> None:
    query = DriverQuery("SELECT a FROM t WHERE x = :x AND y::text = :y AND z = :x")
    assert query._render("postgresql") == (
        "SELECT a FROM t WHERE x = %s AND y::text = %s AND z = %s",
        ("x", "y", "x"),
    )
    assert query._render("sqlite")[0] == "SELECT a FROM t WHERE x = ? AND y::text = ? AND z = ?"


def test_driver_errors_surface_as_sqlalchemy_exceptions(database_url: str) -> None:
    """The store's retry loop catches sqlalchemy.exc.IntegrityError, whatever ran the statement."""
    engine = _engine(database_url)
    claims = BulkInsert(identifier_claim, ("res_type", "system", "value", "res_id"))
    with pytest.raises(IntegrityError), engine.begin() as conn:
        claims.execute(conn, [("Patient", "urn:x", "1", "a"), ("Patient", "urn:x", "1", "b")])
    engine.dispose()


def test_multi_insert_writes_every_table_in_one_statement_and_fails_as_one(database_url: str) -> None:
    """Several tables' rows (some tables empty) in one go; a unique violation in any table loses all."""
    engine = _engine(database_url)
    claims = BulkInsert(identifier_claim, ("res_type", "system", "value", "res_id"))
    both = MultiInsert((_INSERT, claims))
    names = [("Patient", "m1", "name", "le", 'Lê "Thị" \\ Ánh')]
    with engine.begin() as conn:
        both.execute(conn, {_INSERT: names, claims: [("Patient", "urn:x", "7", "m1")]})
        both.execute(conn, {claims: [("Patient", "urn:x", "8", "m1")]})  # no rows for the other table
        both.execute(conn, {})
    with pytest.raises(IntegrityError), engine.begin() as conn:
        both.execute(
            conn, {_INSERT: [("Patient", "m2", "name", "x", "X")], claims: [("Patient", "urn:x", "7", "m2")]}
        )
    with engine.connect() as conn:
        assert _BY_ID.all(conn, {"t": "Patient", "i": "m1"}) == [("name", names[0][4])]
        assert _BY_ID.first(conn, {"t": "Patient", "i": "m2"}) is None
        owners = conn.execute(select(identifier_claim.c.value).order_by(identifier_claim.c.value)).all()
    assert [r[0] for r in owners] == ["7", "8"]
    engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_a_read_only_block_keeps_the_connections_prepared_statements(database_url: str) -> None:
    """``reader`` blocks end without ROLLBACK, which would make psycopg DEALLOCATE ALL (see reader)."""
    engine = make_engine(database_url, pool_size=1)  # one pooled connection: every block gets it
    prepared = text("SELECT count(*) FROM pg_prepared_statements")

    def prepare() -> int:
        with engine.begin() as conn:
            for _ in range(6):  # psycopg prepares a statement on its 6th execution
                _BY_ID.all(conn, {"t": "Patient", "i": "nobody"})
            return int(conn.execute(prepared).scalar_one())

    assert prepare() >= 1
    with reader(engine).connect() as conn:
        conn.execute(select(search_string.c.res_id).limit(1)).all()
    with engine.begin() as conn:
        assert conn.execute(prepared).scalar_one() >= 1
    with engine.connect() as conn:  # what the pollers did: the implicit transaction is rolled back
        conn.execute(select(search_string.c.res_id).limit(1)).all()
    with engine.begin() as conn:
        assert conn.execute(prepared).scalar_one() == 0
    engine.dispose()
