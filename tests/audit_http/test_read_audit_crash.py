"""kill -9 right after reads were answered: every answered read is in the audit trail (issue #18 item 6).

A real ``carebridge serve`` process on each backend answers reads from several
clients at once; the moment the last answer arrives the process is killed with
SIGKILL (no shutdown hook runs).  With durable read audit (the default) every read
that got an answer has its AuditEvent committed, matched by the request id the
client chose.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from audit.schema import audit_event
from fhir_store import make_engine
from gateway.auth.clients import ClientRegistry
from tests.auth.test_revocation_live import ROOT, _free_port, _wait_ready
from tests.crm_bridge.conftest import full_patient
from tests.support import TEST_SECRET_LOG2N

CLIENTS = 4
READS_EACH = 15


@pytest.mark.slow
def test_every_answered_read_survives_kill_9(database_url: str, tmp_path: Path) -> None:
    engine = make_engine(database_url, pool_size=1)
    secret = ClientRegistry(engine, secret_log2n=TEST_SECRET_LOG2N).add("crash-reader", "his_integration")
    engine.dispose()
    port = _free_port()
    env = {
        **os.environ,
        "CAREBRIDGE_LOG_LEVEL": "WARNING",
        "CAREBRIDGE_AUDIT_KEY_FILE": str(tmp_path / "audit.pem"),
        "CAREBRIDGE_AUDIT_DURABLE_READS": "true",
    }
    command = [sys.executable, "-m", "gateway.cli", "serve", "--database-url", database_url]
    command += ["--http-port", str(port), "--mllp-port", str(_free_port())]
    proc = subprocess.Popen(command, cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    answered: list[str] = []
    try:
        _wait_ready(base, proc)
        form = {
            "grant_type": "client_credentials",
            "client_id": "crash-reader",
            "client_secret": secret or "",
        }
        token = httpx.post(f"{base}/auth/token", data=form, timeout=30).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        created = httpx.post(
            f"{base}/fhir/Patient",
            json=full_patient(),
            headers={**headers, "Content-Type": "application/fhir+json"},
            timeout=30,
        )
        assert created.status_code == 201, created.text
        pid = created.json()["id"]

        def reads(worker: int) -> list[str]:
            done = []
            with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
                for n in range(READS_EACH):
                    request_id = f"crash-{worker}-{n}"
                    path = f"/fhir/Patient/{pid}" if n % 2 else f"/fhir/Patient?_id={pid}"
                    response = http.get(path, headers={"X-Request-ID": request_id})
                    assert response.status_code == 200, response.text
                    done.append(request_id)
            return done

        with ThreadPoolExecutor(CLIENTS) as pool:
            for done in pool.map(reads, range(CLIENTS)):
                answered += done
    finally:
        proc.send_signal(signal.SIGKILL)  # at once: nothing is flushed on the way out
        proc.wait(timeout=30)
    assert len(answered) == CLIENTS * READS_EACH
    engine = make_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            contents = b"\n".join(bytes(r[0]) for r in conn.execute(select(audit_event.c.content)).all())
    finally:
        engine.dispose()
    missing = [rid for rid in answered if f'"{rid}"'.encode() not in contents]
    assert missing == [], f"{len(missing)} of {len(answered)} answered reads are not in the audit trail"
