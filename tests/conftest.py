"""Project-wide test fixtures: database backends and a fresh, migrated database per test.

- ``fast_pg_cluster`` (session): a throwaway PostgreSQL cluster with fsync, synchronous_commit and
  full_page_writes off, for the functional suite; ``durable_pg_cluster`` (session): one with all
  three on, for tests marked ``durable`` (they kill a process and check what survived).  Each is
  started only when a test needs it, once per pytest-xdist worker; if it cannot start, the tests
  that need it FAIL.
- ``backend`` (parametrized ``sqlite`` / ``pg``): the ``pg`` case carries the ``postgres`` marker.
- ``database_url``: a new database for this test on ``backend``, at the Alembic head.  The
  migrations run once per worker into a template (a PostgreSQL template database per cluster, a
  SQLite file) and each test gets a copy; tests marked ``fresh_migration`` get an empty database
  migrated from scratch instead (the migration tests).

Markers (registered in pyproject.toml): ``slow`` -- the suite's slowest tests, so that
``pytest -m "not slow"`` gives a quick loop (``make test`` runs everything); ``durable``; and
``fresh_migration``.

Fixtures for one area belong in a ``conftest.py`` in that area's test folder, not here.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("CAREBRIDGE_LOG_LEVEL", "WARNING")

# `.venv/bin/pytest` does not put the repository root on sys.path; `tests.support` lives there.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.support.http_tls import share_default_tls_context  # noqa: E402
from tests.support.postgres import PostgresCluster  # noqa: E402

share_default_tls_context()

TEMPLATE_DB = "carebridge_template"


def migrate(database_url: str) -> None:
    """Bring a database to the Alembic head: the ONE place the suite runs the migrations."""
    from fhir_store.migrations import upgrade

    upgrade(database_url)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``slow`` first (stable otherwise), so that pytest-xdist starts the long ones early.

    pytest-xdist hands tests to the workers in collection order; a long test dealt last keeps one
    worker busy while the other has finished, and that tail was part of every ``make test``.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def fast_pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster.start(durable=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def durable_pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster.start(durable=True)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def pg_template() -> Callable[[PostgresCluster], str]:
    """The name of the migrated template database on a cluster, migrated on first use."""
    ready: set[int] = set()

    def template_on(cluster: PostgresCluster) -> str:
        if id(cluster) not in ready:
            migrate(cluster.create_database(TEMPLATE_DB))
            cluster.make_template(TEMPLATE_DB)
            ready.add(id(cluster))
        return TEMPLATE_DB

    return template_on


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file whose WAL is folded into it, so one file copy is a whole database."""
    path = tmp_path_factory.mktemp("sqlite-template") / "carebridge.db"
    migrate(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)  # empty after the checkpoint; a copy must not pick them up
    return path


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="pg", marks=pytest.mark.postgres),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    fresh = request.node.get_closest_marker("fresh_migration") is not None
    if backend == "sqlite":
        path = tmp_path / "carebridge.db"
        url = f"sqlite:///{path}"
        if fresh:
            migrate(url)
        else:
            shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield url
        return
    durable = request.node.get_closest_marker("durable") is not None
    cluster: PostgresCluster = request.getfixturevalue("durable_pg_cluster" if durable else "fast_pg_cluster")
    name = f"t_{uuid.uuid4().hex}"
    if fresh:
        url = cluster.create_database(name)
        migrate(url)
    else:
        template_on: Callable[[PostgresCluster], str] = request.getfixturevalue("pg_template")
        url = cluster.create_database(name, template=template_on(cluster))
    yield url
    cluster.drop_database(name)  # keeps disk use flat over a long session
