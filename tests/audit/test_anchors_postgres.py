"""PostgreSQL: the service role cannot lift the append-only guard; the owner can, and the anchors catch it.

Issue #18 item 1: migrations run as the owner, the service as a login role in
``carebridge_app`` (INSERT and SELECT only on the audit tables).  An attacker
with the owner's password can still ``DISABLE TRIGGER`` and delete: what
stops that from going unnoticed is ``verify --anchors``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import ProgrammingError

from fhir_store.database import make_engine
from tests.audit.test_anchors import EVENTS, anchor_file, anchored, public_pem  # noqa: F401 (fixtures)
from tests.audit.test_postgres_roles import app_url  # noqa: F401 (fixture)

pytestmark = pytest.mark.postgres


@pytest.fixture(params=["postgresql"])
def backend(request: pytest.FixtureRequest) -> str:  # override: PostgreSQL only
    return str(request.param)


def test_owner_disables_the_trigger_and_deletes_but_anchors_catch_it(
    anchored: dict[int, str],  # noqa: F811
    app_url: str,  # noqa: F811
    engine: Engine,
    cli: Callable[..., tuple[int, str]],
    anchor_file: Path,  # noqa: F811
    public_pem: str,  # noqa: F811
) -> None:
    service = make_engine(app_url, pool_size=1)
    try:
        for statement in ("ALTER TABLE audit_event DISABLE TRIGGER USER", "DELETE FROM audit_event"):
            with pytest.raises(ProgrammingError) as info, service.begin() as conn:
                conn.execute(text(statement))
            assert "must be owner" in str(info.value) or "permission denied" in str(info.value)
    finally:
        service.dispose()
    with engine.begin() as conn:  # the owner (the migrations' role) can
        for table in ("audit_event", "audit_event_key", "audit_checkpoint"):
            conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
        for table in ("audit_event_key", "audit_event", "audit_checkpoint"):
            conn.execute(text(f"DELETE FROM {table} WHERE seq > 5"))
        for table in ("audit_event", "audit_event_key", "audit_checkpoint"):
            conn.execute(text(f"ALTER TABLE {table} ENABLE TRIGGER USER"))
    assert cli("verify") == (0, "ok 5 events\n")  # the database alone cannot tell
    for key in ((), ("--public-key", public_pem)):
        code, out = cli("verify", *key, "--anchors", str(anchor_file))
        assert code == 1, out
        assert f"anchored event seq {EVENTS} is gone, the chain ends at seq 5" in out


def test_serve_runs_as_the_service_role_and_migrates_as_the_owner(
    app_url: str,  # noqa: F811
    database_url: str,
    tmp_path: Path,
) -> None:
    """What `make up-local` and docker compose set up: the owner migrates, the service only appends audit."""
    from common import AuditSettings
    from fhir_store import Create
    from gateway.runtime import Runtime
    from gateway.settings import Settings
    from tests.audit.conftest import CTX, patient

    audit = AuditSettings(key_file=str(tmp_path / "audit.pem"), anchor_file=str(tmp_path / "anchors.jsonl"))
    settings = Settings(database_url=app_url, database_owner_url=database_url, audit=audit)
    assert settings.migration_url == database_url
    runtime = Runtime.create(settings)  # migrations (a no-op here, at head) as the owner
    try:
        with runtime.engine.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar() == make_engine_user(app_url)
        runtime.store.transact([Create(patient())], replace(CTX, grants=("system/Patient.cruds",)))
        with pytest.raises(ProgrammingError), runtime.engine.begin() as conn:
            conn.execute(text("DELETE FROM audit_event"))
    finally:
        runtime.close()  # the shutdown checkpoint is written by the service role
    from audit import read_anchors

    assert read_anchors(tmp_path / "anchors.jsonl")[-1].seq >= 1


def make_engine_user(url: str) -> str:
    from sqlalchemy.engine import make_url

    return str(make_url(url).username)
