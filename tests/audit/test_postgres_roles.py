"""PostgreSQL: audit rows cannot be changed by the application role, nor by the owner.

Migration 0002 creates the NOLOGIN role ``carebridge_app`` (INSERT/SELECT only on
the audit tables) and triggers that reject UPDATE/DELETE/TRUNCATE.  The service
runs as a login role that is a member of ``carebridge_app``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, ProgrammingError

from audit.checkpoints import AuditKeys
from audit.hooks import AuditHook
from audit.verify import verify_engine
from fhir_store.database import make_engine
from fhir_store.pipeline import HookPipeline
from fhir_store.repository import FhirStore
from tests.audit.conftest import CTX, create, patient
from tests.support.store_keys import cipher_for

pytestmark = pytest.mark.postgres


@pytest.fixture(params=["postgresql"])
def backend(request: pytest.FixtureRequest) -> str:  # override: PostgreSQL only
    return str(request.param)


@pytest.fixture
def app_url(database_url: str) -> Iterator[str]:
    """A login role that is a member of carebridge_app (how an operator runs the service)."""
    name = f"svc_{uuid.uuid4().hex[:12]}"
    url = make_url(database_url)
    admin = f"host={url.host} port={url.port} user={url.username} dbname={url.database}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN IN ROLE carebridge_app")
    yield url.set(username=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP OWNED BY {name}")
        conn.execute(f"DROP ROLE {name}")


def test_application_role_can_append_but_not_change(app_url: str, keys: AuditKeys) -> None:
    engine = make_engine(app_url, pool_size=2)
    try:
        hook = AuditHook(engine, keys, checkpoint_every=2, async_reads=False)
        store = FhirStore(
            engine,
            pipeline=HookPipeline.of(("audit", "group", hook), ("audit", "access", hook)),
            cipher=cipher_for(engine),
        )
        pid = create(store, patient())
        store.read("Patient", pid, CTX)
        create(store, patient())
        assert verify_engine(engine, keys).events == 3
        buffered = AuditHook(engine, keys, checkpoint_every=2)  # batches go in with COPY
        reading = FhirStore(
            engine, pipeline=HookPipeline.of(("audit", "access", buffered)), cipher=cipher_for(engine)
        )
        for _ in range(10):
            reading.read("Patient", pid, CTX)
        buffered.close()
        assert buffered.dropped == 0
        assert verify_engine(engine, keys).events == 13
        for statement in (
            "UPDATE audit_event SET outcome = '0'",
            "DELETE FROM audit_event",
            "TRUNCATE audit_event",
            "DELETE FROM audit_checkpoint",
            "UPDATE audit_checkpoint SET signature = ''",
        ):
            with pytest.raises(ProgrammingError) as info, engine.begin() as conn:
                conn.execute(text(statement))
            assert "permission denied" in str(info.value)
        # and it may not disable the triggers either (only the owner can)
        with pytest.raises(ProgrammingError), engine.begin() as conn:
            conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER USER"))
        assert verify_engine(engine, keys).ok
    finally:
        engine.dispose()


def test_even_the_owner_is_stopped_by_the_trigger(
    store: FhirStore, engine: Engine, keys: AuditKeys, hook: AuditHook
) -> None:
    create(store, patient())
    assert hook.checkpoint() == 1
    for statement in (
        "UPDATE audit_event SET outcome = '12'",
        "DELETE FROM audit_event",
        "TRUNCATE audit_event",
        "DELETE FROM audit_checkpoint",
    ):
        with pytest.raises(DBAPIError) as info, engine.begin() as conn:
            conn.execute(text(statement))
        assert "append-only" in str(info.value)
    assert verify_engine(engine, keys).ok
