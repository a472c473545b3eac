"""``make up-local`` (deploy/up_local.py): PostgreSQL + carebridge serve, ready, and both stop on SIGTERM.

Runs the real script in a subprocess on free ports with its cluster in a
temporary directory, waits for ``/readyz`` (database reachable, schema at
head), checks it really is PostgreSQL, then sends SIGTERM and checks that the
script stopped carebridge *and* the PostgreSQL server it started.  A second run
on the same directory reuses the persistent cluster (data survives).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
# slow: starts a PostgreSQL cluster and `carebridge serve` as subprocesses
pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # Not tmp_path: as root, the server runs as `postgres`, which must be able to reach the directory.
    base = Path(tempfile.mkdtemp(prefix="carebridge-uplocal-"))
    os.chmod(base, 0o755)
    yield base / "pg"
    shutil.rmtree(base, ignore_errors=True)


def run_once(data_dir: Path, pg_port: int) -> str:
    """Start up-local, wait until ready, SIGTERM it; returns the readiness body."""
    http_port, mllp_port = free_port(), free_port()
    env = {**os.environ, "CAREBRIDGE_AUDIT_KEY_FILE": str(data_dir.parent / "audit.pem")}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "deploy" / "up_local.py"), "--data-dir", str(data_dir),
         "--pg-port", str(pg_port), "--http-port", str(http_port), "--mllp-port", str(mllp_port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline, body = time.monotonic() + 120, ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=2)
                if response.status_code == 200:
                    body = response.text
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert body, f"never ready (exit code {proc.poll()})"
        assert port_open(mllp_port) and port_open(pg_port)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output
    assert "stopping PostgreSQL" in output
    assert not port_open(pg_port) and not port_open(http_port) and not port_open(mllp_port)
    return body


def test_up_local_runs_carebridge_on_postgres_and_stops_both(data_dir: Path) -> None:
    pg_port = free_port()
    assert '"ready"' in run_once(data_dir, pg_port)
    url_file = data_dir / "database.url"
    assert url_file.read_text().startswith("postgresql://postgres:")
    assert url_file.stat().st_mode & 0o777 == 0o600
    assert (data_dir / "superuser.password").stat().st_mode & 0o777 == 0o600
    # issue #18: the service runs as carebridge_svc (not the owner), whose secrets are 0600 too
    service_url = data_dir / "service.url"
    assert service_url.read_text().startswith("postgresql://carebridge_svc:")
    for secret in (service_url, data_dir / "service.password"):
        assert secret.stat().st_mode & 0o777 == 0o600
    assert (data_dir / "data" / "PG_VERSION").exists()
    # second start: the same persistent cluster, already migrated
    assert '"ready"' in run_once(data_dir, pg_port)
