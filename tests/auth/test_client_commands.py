"""``carebridge clients show|disable|enable|rotate-secret|set-role|remove`` and ``keys rotate-signing`` (both backends).

Each command changes the database a running server reads: a token issued before
is refused afterwards by a process that did not run the command.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from common import Unauthenticated
from fhir_store import make_engine
from gateway.auth.clients import ClientRegistry
from gateway.cli import main
from tests.auth.test_token_attacks import service
from tests.support import TEST_SECRET_LOG2N


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=2)
    yield engine
    engine.dispose()


def _token(engine: Engine, client_id: str) -> str:
    client = ClientRegistry(engine).get(client_id)
    assert client is not None
    return str(service(engine).issue(client, [])["access_token"])


def test_client_lifecycle_commands(
    engine: Engine, database_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAREBRIDGE_AUTH_SECRET_LOG2N", str(TEST_SECRET_LOG2N))
    db = ["--database-url", database_url]
    assert main(["clients", "add", "--id", "his-9", "--role", "his_integration", *db]) == 0
    worker = service(engine)  # a running server process
    token = _token(engine, "his-9")
    assert worker.verify(token).client_id == "his-9"
    capsys.readouterr()

    assert main(["clients", "show", "--id", "his-9", *db]) == 0
    shown = capsys.readouterr().out
    assert "role: his_integration" in shown and "state: active" in shown and "client_secret" in shown

    assert main(["clients", "disable", "--id", "his-9", *db]) == 0
    with pytest.raises(Unauthenticated):
        worker.verify(token)
    assert main(["clients", "enable", "--id", "his-9", *db]) == 0
    assert worker.verify(token).client_id == "his-9"

    capsys.readouterr()
    assert main(["clients", "rotate-secret", "--id", "his-9", *db]) == 0
    secret = next(
        line.split(": ", 1)[1]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("client_secret:")
    )
    with pytest.raises(Unauthenticated):
        worker.verify(token)
    assert ClientRegistry(engine).authenticate_secret("his-9", secret).generation == 1

    token = _token(engine, "his-9")
    assert main(["clients", "set-role", "--id", "his-9", "--role", "clinician", *db]) == 0
    with pytest.raises(Unauthenticated):
        worker.verify(token)
    client = ClientRegistry(engine).get("his-9")
    assert client is not None and client.role == "clinician" and "Patient.c" not in client.scopes

    token = _token(engine, "his-9")
    assert main(["clients", "remove", "--id", "his-9", *db]) == 0
    with pytest.raises(Unauthenticated):
        worker.verify(token)
    assert main(["clients", "show", "--id", "his-9", *db]) == 2
    assert main(["clients", "disable", "--id", "his-9", *db]) == 2
    assert "no client" in capsys.readouterr().err


def test_keys_rotate_signing_command(
    engine: Engine, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    worker = service(engine)
    old = {k["kid"] for k in worker.jwks()["keys"]}
    assert main(["keys", "rotate-signing", "--database-url", database_url]) == 0
    out = capsys.readouterr().out
    new = {k["kid"] for k in worker.jwks()["keys"]} - old
    assert len(new) == 1 and f"signing key {next(iter(new))} now signs" in out
    assert worker.state.current().signing.kid in new
