"""Issue #16 item 3 end to end: `carebridge serve` with two HTTP worker processes, changed by the CLI.

A token is used against both processes (requests alternate between them on the
shared socket); after `carebridge keys rotate-signing` every process signs with the
new key and publishes both, and after `carebridge clients disable` every process
refuses the token within 5 seconds, without a restart.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
from joserfc import jws

from fhir_store import make_engine
from gateway.auth.clients import ClientRegistry
from gateway.cli import main
from tests.support import TEST_SECRET_LOG2N

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 5.0  # the bound for every running process
T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_cli_changes_reach_every_http_worker(database_url: str) -> None:
    engine = make_engine(database_url, pool_size=1)
    secret = ClientRegistry(engine, secret_log2n=TEST_SECRET_LOG2N).add("his-live", "his_integration")
    engine.dispose()
    port = _free_port()
    env = {**os.environ, "CAREBRIDGE_HTTP_WORKERS": "2", "CAREBRIDGE_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "gateway.cli", "serve", "--database-url", database_url]
    command += ["--http-port", str(port), "--mllp-port", str(_free_port())]
    proc = subprocess.Popen(command, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc)
        form = {"grant_type": "client_credentials", "client_id": "his-live", "client_secret": secret or ""}
        with httpx.Client(base_url=base, timeout=30) as http:
            old_token = http.post("/auth/token", data=form).json()["access_token"]
            headers = {"Authorization": f"Bearer {old_token}"}
            assert {http.get("/fhir/Patient", headers=headers).status_code for _ in range(20)} == {200}

            assert main(["keys", "rotate-signing", "--database-url", database_url]) == 0
            new_kid = _within_deadline(lambda: _new_kid(http, form, old_token))
            jwks = [{k["kid"] for k in http.get("/auth/jwks").json()["keys"]} for _ in range(10)]
            assert all(new_kid in kids and _kid(old_token) in kids for kids in jwks)

            assert main(["clients", "disable", "--id", "his-live", "--database-url", database_url]) == 0
            _within_deadline(lambda: _all_refused(http, headers))
            assert http.post("/auth/token", data=form).status_code == 401
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)


def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
        time.sleep(0.2)


def _kid(token: str) -> str:
    return str(jws.extract_compact(token.encode()).protected["kid"])


def _new_kid(http: httpx.Client, form: dict[str, str], old_token: str) -> str | None:
    """The kid of fresh tokens once every process (10 tokens in a row) signs with a new key."""
    kids = {_kid(http.post("/auth/token", data=form).json()["access_token"]) for _ in range(10)}
    return kids.pop() if len(kids) == 1 and _kid(old_token) not in kids else None


def _all_refused(http: httpx.Client, headers: dict[str, str]) -> bool | None:
    return {http.get("/fhir/Patient", headers=headers).status_code for _ in range(10)} == {401} or None


def _within_deadline(check: Callable[[], T | None]) -> T:
    start = time.monotonic()
    while True:
        found = check()
        if found is not None:
            return found
        assert time.monotonic() - start < DEADLINE_S, "not applied by every process in time"
        time.sleep(0.1)
