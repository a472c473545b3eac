"""The test harness itself: throwaway PostgreSQL cluster and the per-test database fixture."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from tests.support.postgres import PostgresCluster

PG = pytest.param("postgresql", id="pg", marks=pytest.mark.postgres)


def test_cluster_is_postgresql_15_with_durable_commits(durable_pg_cluster: PostgresCluster) -> None:
    with psycopg.connect(durable_pg_cluster.dsn()) as conn:
        version, sync_commit, fsync, address = conn.execute(
            "SELECT current_setting('server_version_num')::int, current_setting('synchronous_commit'),"
            " current_setting('fsync'), host(inet_server_addr())"
        ).fetchone() or (0, "", "", "")
    assert version >= 150000
    assert sync_commit == "on"
    assert fsync == "on"
    assert address == "127.0.0.1"


def test_url_works_with_sqlalchemy(fast_pg_cluster: PostgresCluster) -> None:
    url = fast_pg_cluster.url("postgres")
    assert url == f"postgresql+psycopg://postgres@127.0.0.1:{fast_pg_cluster.port}/postgres"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT current_database()")) == "postgres"
    finally:
        engine.dispose()


def test_fresh_databases_are_isolated(fast_pg_cluster: PostgresCluster) -> None:
    fast_pg_cluster.create_database("iso_a")
    fast_pg_cluster.create_database("iso_b")
    try:
        with psycopg.connect(fast_pg_cluster.dsn("iso_a")) as conn:
            conn.execute("CREATE TABLE probe (v text)")
            conn.execute("INSERT INTO probe VALUES ('only in a')")
        with psycopg.connect(fast_pg_cluster.dsn("iso_a")) as conn:
            assert conn.execute("SELECT v FROM probe").fetchall() == [("only in a",)]
        with psycopg.connect(fast_pg_cluster.dsn("iso_b")) as conn:
            assert conn.execute("SELECT to_regclass('probe')").fetchone() == (None,)
    finally:
        fast_pg_cluster.drop_database("iso_a")
        fast_pg_cluster.drop_database("iso_b")


def test_database_names_are_validated(fast_pg_cluster: PostgresCluster) -> None:
    with pytest.raises(ValueError):
        fast_pg_cluster.create_database('x"; DROP DATABASE postgres; --')


@pytest.mark.slow
def test_stop_shuts_down_and_removes_files() -> None:
    cluster = PostgresCluster.start(durable=False)
    try:
        with psycopg.connect(cluster.dsn()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        cluster.stop()
    assert not cluster.base_dir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.dsn(), connect_timeout=2)
    cluster.stop()  # idempotent


@pytest.mark.parametrize("attempt", [1, 2])
def test_database_url_is_fresh_for_every_test(
    database_url: str, backend: str, tmp_path: Path, attempt: int
) -> None:
    # Both attempts create the same table: the second would find it if databases were reused.
    if backend == "sqlite":
        assert database_url == f"sqlite:///{tmp_path / 'carebridge.db'}"
    else:
        assert database_url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
    engine = sa.create_engine(database_url)
    try:
        assert "harness_probe" not in sa.inspect(engine).get_table_names()
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE harness_probe (attempt integer)"))
            conn.execute(sa.text("INSERT INTO harness_probe VALUES (:a)"), {"a": attempt})
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT attempt FROM harness_probe")) == attempt
    finally:
        engine.dispose()


def test_fast_cluster_is_not_durable(fast_pg_cluster: PostgresCluster) -> None:
    with psycopg.connect(fast_pg_cluster.dsn()) as conn:
        row = conn.execute(
            "SELECT current_setting('fsync'), current_setting('synchronous_commit'),"
            " current_setting('full_page_writes')"
        ).fetchone()
    assert row == ("off", "off", "off")


@pytest.mark.parametrize("backend", ["sqlite", PG], indirect=True)
def test_database_url_is_a_copy_at_the_migration_head(database_url: str) -> None:
    from fhir_store.database import make_engine
    from fhir_store.migrations import current_revision, head_revision

    engine = make_engine(database_url, pool_size=1)
    try:
        assert current_revision(engine) == head_revision() is not None
        assert {"resource_current", "audit_event"} <= set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


@pytest.mark.fresh_migration
@pytest.mark.parametrize("backend", ["sqlite", PG], indirect=True)
def test_fresh_migration_marker_gives_a_database_at_the_head(database_url: str) -> None:
    from fhir_store.database import make_engine
    from fhir_store.migrations import current_revision, head_revision

    engine = make_engine(database_url, pool_size=1)
    try:
        assert current_revision(engine) == head_revision() is not None
    finally:
        engine.dispose()


@pytest.mark.durable
@pytest.mark.parametrize("backend", [PG], indirect=True)
def test_durable_marker_puts_the_database_on_the_fsync_on_cluster(
    database_url: str, durable_pg_cluster: PostgresCluster
) -> None:
    assert database_url.startswith(durable_pg_cluster.url("t_"))
    with psycopg.connect(durable_pg_cluster.dsn(sa.make_url(database_url).database or "")) as conn:
        assert conn.execute("SELECT current_setting('fsync')").fetchone() == ("on",)


@pytest.mark.parametrize("backend", [PG], indirect=True)
def test_the_template_refuses_connections(fast_pg_cluster: PostgresCluster, database_url: str) -> None:
    with psycopg.connect(fast_pg_cluster.dsn()) as conn:
        row = conn.execute(
            "SELECT datistemplate, datallowconn FROM pg_database WHERE datname = 'carebridge_template'"
        ).fetchone()
    assert row == (True, False)
