"""The test harness itself: throwaway PostgreSQL cluster and the per-test database fixture."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from tests.support.postgres import PostgresCluster


def test_cluster_is_postgresql_15_with_durable_commits(pg_cluster: PostgresCluster) -> None:
    with psycopg.connect(pg_cluster.dsn()) as conn:
        version, sync_commit, fsync, address = conn.execute(
            "SELECT current_setting('server_version_num')::int, current_setting('synchronous_commit'),"
            " current_setting('fsync'), host(inet_server_addr())"
        ).fetchone() or (0, "", "", "")
    assert version >= 150000
    assert sync_commit == "on"
    assert fsync == "on"
    assert address == "127.0.0.1"


def test_url_works_with_sqlalchemy(pg_cluster: PostgresCluster) -> None:
    url = pg_cluster.url("postgres")
    assert url == f"postgresql+psycopg://postgres@127.0.0.1:{pg_cluster.port}/postgres"
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT current_database()")) == "postgres"
    finally:
        engine.dispose()


def test_fresh_databases_are_isolated(pg_cluster: PostgresCluster) -> None:
    pg_cluster.create_database("iso_a")
    pg_cluster.create_database("iso_b")
    try:
        with psycopg.connect(pg_cluster.dsn("iso_a")) as conn:
            conn.execute("CREATE TABLE probe (v text)")
            conn.execute("INSERT INTO probe VALUES ('only in a')")
        with psycopg.connect(pg_cluster.dsn("iso_a")) as conn:
            assert conn.execute("SELECT v FROM probe").fetchall() == [("only in a",)]
        with psycopg.connect(pg_cluster.dsn("iso_b")) as conn:
            assert conn.execute("SELECT to_regclass('probe')").fetchone() == (None,)
    finally:
        pg_cluster.drop_database("iso_a")
        pg_cluster.drop_database("iso_b")


def test_database_names_are_validated(pg_cluster: PostgresCluster) -> None:
    with pytest.raises(ValueError):
        pg_cluster.create_database('x"; DROP DATABASE postgres; --')


def test_stop_shuts_down_and_removes_files() -> None:
    cluster = PostgresCluster.start()
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
