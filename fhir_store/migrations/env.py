"""Alembic environment: runs on the connection handed over by :func:`upgrade`.

The audit and auth tables are registered on the store's shared ``metadata`` by
their own packages; importing them here is what lets ``alembic revision
--autogenerate`` see every table (otherwise it would propose dropping them).
``gateway.auth.schema`` reaching up into ``gateway`` is acceptable only in this
file: the migrations are the one place that must know the whole schema.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import audit.schema  # noqa: F401  (registers the audit tables on metadata)
import gateway.auth.schema  # noqa: F401  (registers the OAuth client/key tables on metadata)
from fhir_store.schema import metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None:  # alembic CLI usage (autogenerate during development)
    engine = create_engine(config.get_main_option("sqlalchemy.url") or "sqlite://")
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=metadata, render_as_batch=True)
        context.run_migrations()
else:
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    context.run_migrations()
