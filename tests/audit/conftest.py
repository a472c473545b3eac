"""Fixtures of the audit tests: a store with the audit hook, a key file, the CLI, a tamper helper."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from audit.checkpoints import AuditKeys
from audit.hooks import AuditHook
from fhir_store.database import make_engine
from fhir_store.model import Create, RequestContext
from fhir_store.pipeline import HookPipeline
from fhir_store.repository import FhirStore
from tests.support.audit_guard import guards_lifted
from tests.support.store_keys import cipher_for

CTX = RequestContext(
    request_id="req-0001",
    client_id="his-bvdk",
    role="his_integration",
    channel="rest",
    source_address="10.1.2.3",
    purpose_of_use="TREAT",
)


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    return str(tmp_path / "keys" / "audit.pem")


@pytest.fixture
def keys(key_file: str) -> AuditKeys:
    return AuditKeys.load_or_create(key_file)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url, pool_size=8)
    yield eng
    eng.dispose()


@pytest.fixture
def hook(engine: Engine, keys: AuditKeys) -> Iterator[AuditHook]:
    # synchronous access events: each read's event is in the chain when read() returns
    h = AuditHook(engine, keys, checkpoint_every=5, async_reads=False)
    yield h
    h.close()


@pytest.fixture
def store(engine: Engine, hook: AuditHook) -> FhirStore:
    return FhirStore(
        engine,
        pipeline=HookPipeline.of(("audit", "group", hook), ("audit", "access", hook)),
        cipher=cipher_for(engine),
    )


def patient(family: str = "Nguyễn") -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family, "given": ["Văn", "An"]}]}


def encounter(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
    }


def create(store: FhirStore, resource: dict[str, Any], ctx: RequestContext = CTX) -> str:
    result = store.transact([Create(resource)], ctx)
    assert result[0].stored is not None
    return result[0].stored.id


@pytest.fixture
def cli(database_url: str, key_file: str) -> Callable[..., tuple[int, str]]:
    """Run the real ``carebridge`` entry point; returns (exit code, stdout)."""
    from gateway.cli import main

    def run(*args: str) -> tuple[int, str]:
        out = io.StringIO()
        with redirect_stdout(out):
            code = main(["audit", *args, "--database-url", database_url, "--key-file", key_file])
        return code, out.getvalue()

    return run


@pytest.fixture
def tamper(engine: Engine) -> Callable[..., None]:
    """Run SQL as an attacker with database superuser rights.

    The append-only triggers are lifted first (PostgreSQL: disabled, which only a
    superuser or the owner can; SQLite: dropped), to show that the chain still
    catches the change.
    """

    def run(*statements: str, params: dict[str, Any] | None = None) -> None:
        with engine.begin() as conn, guards_lifted(conn):
            for statement in statements:
                conn.execute(text(statement), params or {})

    return run
