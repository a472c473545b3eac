"""The migrations build exactly the schema the code declares, on both backends.

Indexes matter for speed (see migration 0007), so a table, column or index that
exists in ``*.schema`` modules but not in the migrated database -- or the
other way round -- fails here rather than in a benchmark.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from fhir_store.database import normalize_url
from gateway.registration import register_all

pytestmark = pytest.mark.fresh_migration  # the migrations themselves run here, not a template copy


def test_migrated_database_matches_the_declared_schema(database_url: str) -> None:
    registry = register_all()  # every package's tables, registered explicitly
    engine = create_engine(normalize_url(database_url))
    try:
        with engine.connect() as conn:
            # A sequence of MetaData, as env.py's target_metadata (compare_metadata's annotation says one)
            differences = compare_metadata(MigrationContext.configure(conn), cast(Any, registry.metadata))
    finally:
        engine.dispose()
    assert differences == []
    assert {"identifier_claim", "audit_event", "crm_outbox", "privacy_request"} <= set(registry.tables)
