"""Project-wide test fixtures: database backends and a fresh, migrated database per test.

- ``pg_cluster`` (session): a throwaway PostgreSQL cluster, started only when a test needs it;
  each pytest-xdist worker has its own.  If it cannot start, the tests that need it FAIL.
- ``backend`` (parametrized ``sqlite`` / ``pg``): the ``pg`` case carries the ``postgres`` marker.
- ``database_url``: a new empty database for this test on ``backend``, upgraded to the Alembic head.

Fixtures for one area belong in a ``conftest.py`` in that area's test folder, not here.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("CAREBRIDGE_LOG_LEVEL", "WARNING")

# `.venv/bin/pytest` does not put the repository root on sys.path; `tests.support` lives there.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from tests.support.postgres import PostgresCluster  # noqa: E402


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    cluster = PostgresCluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


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
    from fhir_store.migrations import upgrade

    cluster: PostgresCluster | None = None
    name = f"t_{uuid.uuid4().hex}"
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'carebridge.db'}"
    else:
        cluster = request.getfixturevalue("pg_cluster")
        url = cluster.create_database(name)
    upgrade(url)
    yield url
    if cluster is not None:
        cluster.drop_database(name)  # keeps disk use flat over a long session
