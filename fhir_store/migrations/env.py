"""Alembic environment: runs on the connection handed over by the caller, against the caller's tables.

The history covers every package's tables, but ``fhir_store`` may not import
the packages above it, so this file imports none of them: ``target_metadata``
comes from ``config.attributes`` (``gateway.migrations`` passes the metadata of
``gateway.registration.register_all``).  :func:`fhir_store.migrations.upgrade`
passes none — running migrations does not compare — and Alembic itself refuses
``check`` and ``revision --autogenerate`` without it, so a comparison can never
run against part of the schema (which would propose dropping the rest).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

config = context.config
target_metadata = config.attributes.get("target_metadata")
connection = config.attributes.get("connection")
if connection is None:  # a caller that hands over a URL only
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        context.run_migrations()
    engine.dispose()
else:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    context.run_migrations()
