"""The write path's lookups use their lookup index on a database PostgreSQL has not analyzed.

A prepared statement is re-planned generically after a few executions; on a
table without statistics every index of it looks equally cheap, and before
migration 0007 the planner picked ``(res_type, res_id)`` for identifier
lookups -- a scan of every claim of the type (linear in the number of
patients, twice per HL7 message).  These tests force the generic plan on a
freshly migrated database and read what PostgreSQL would run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, text

from fhir_store.database import make_engine

pytestmark = pytest.mark.postgres


@pytest.fixture(params=["postgresql"])
def backend(request: pytest.FixtureRequest) -> str:  # override: PostgreSQL only
    return str(request.param)


@pytest.fixture
def conn(database_url: str) -> Iterator[Connection]:
    engine = make_engine(database_url)
    with engine.connect() as connection:
        connection.execute(text("SET plan_cache_mode = force_generic_plan"))
        yield connection
        connection.rollback()
    engine.dispose()


def _fill(conn: Connection) -> None:
    rows = [{"t": "Patient", "s": f"sys{i % 3}", "v": f"value{i}", "i": f"p{i}"} for i in range(2000)]
    conn.execute(
        text("INSERT INTO identifier_claim (res_type, system, value, res_id) VALUES (:t, :s, :v, :i)"), rows
    )
    conn.execute(
        text(
            "INSERT INTO search_token (res_type, res_id, param, system, code)"
            " VALUES (:t, :i, 'identifier', :s, :v)"
        ),
        rows,
    )
    conn.execute(
        text(
            "INSERT INTO resource_current (res_type, res_id, version, last_updated_us, deleted)"
            " VALUES (:t, :i, 1, 1790000000000000, false)"
        ),
        rows,
    )


def plan(conn: Connection, statement: str, types: str, args: str) -> str:
    """The plan a long-lived connection keeps: made while the tables were empty, used after they grew."""
    conn.execute(text(f"PREPARE probe ({types}) AS {statement}"))
    try:
        conn.execute(text(f"EXECUTE probe ({args})"))
        _fill(conn)
        return "\n".join(row[0] for row in conn.execute(text(f"EXPLAIN EXECUTE probe ({args})")))
    finally:
        conn.execute(text("DEALLOCATE probe"))


def test_identifier_owner_lookup_is_a_primary_key_probe(conn: Connection) -> None:
    shown = plan(
        conn,
        "SELECT res_id FROM identifier_claim WHERE res_type = $1 AND system = $2 AND value = $3",
        "text, text, text",
        "'Patient', 'sys1', 'value7'",
    )
    assert "pk_identifier_claim" in shown and "Filter" not in shown, shown


def test_identifier_search_uses_the_token_index(conn: Connection) -> None:
    shown = plan(
        conn,
        "SELECT res_id FROM search_token WHERE res_type = $1 AND param = $2 AND code = $3 AND system = $4",
        "text, text, text, text",
        "'Patient', 'identifier', 'value7', 'sys1'",
    )
    assert "ix_search_token_res_type_param_code_system" in shown, shown


def test_owner_indexes_still_serve_owner_lookups(conn: Connection) -> None:
    shown = plan(
        conn,
        "SELECT system, value FROM identifier_claim WHERE res_type = $1 AND res_id = $2",
        "text, text",
        "'Patient', 'p7'",
    )
    assert "ix_identifier_claim_res_id_res_type" in shown, shown


def test_current_version_lookup_is_a_primary_key_probe(conn: Connection) -> None:
    shown = plan(
        conn,
        "SELECT version, content FROM resource_current WHERE res_type = $1 AND res_id = $2",
        "text, text",
        "'Patient', 'p7'",
    )
    assert "pk_resource_current" in shown and "Filter" not in shown, shown
