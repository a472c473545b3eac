"""``carebridge serve`` with several HTTP worker processes: all answer, all stop with the parent."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().split()
            except OSError:
                continue
            if int(stat[3]) == pid:
                found.add(int(entry.name))
    return found


@pytest.mark.slow
def test_two_http_workers_serve_and_stop(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "CAREBRIDGE_HTTP_WORKERS": "2", "CAREBRIDGE_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway.cli",
            "serve",
            "--database-url",
            f"sqlite:///{tmp_path}/w.db",
            "--http-port",
            str(port),
            "--mllp-port",
            str(_free_port()),
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, "server did not start"
            time.sleep(0.2)
        workers = _children(proc.pid)
        assert len(workers) == 1  # one extra HTTP process beside the main one
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as http:
            statuses = {http.get("/fhir/metadata").status_code for _ in range(20)}
        assert statuses == {200}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    for pid in workers:
        assert (
            not Path(f"/proc/{pid}").exists() or "Z" in (Path(f"/proc/{pid}") / "stat").read_text().split()[2]
        )


@pytest.mark.slow
def test_sigterm_while_starting_stops_the_parent_and_its_workers(tmp_path: Path) -> None:
    """SIGTERM as soon as the HTTP worker is forked, while the parent is still starting up.

    The parent notes the signal and stops once started; it must neither hang nor leave the
    worker behind.
    """
    env = {**os.environ, "CAREBRIDGE_HTTP_WORKERS": "2", "CAREBRIDGE_LOG_LEVEL": "WARNING"}
    command = [sys.executable, "-m", "gateway.cli", "serve", "--database-url", f"sqlite:///{tmp_path}/w.db"]
    command += ["--http-port", str(_free_port()), "--mllp-port", str(_free_port())]
    proc = subprocess.Popen(command, cwd=ROOT, env=env)
    deadline = time.monotonic() + 60
    workers: set[int] = set()
    while not workers:
        assert time.monotonic() < deadline and proc.poll() is None, "no worker was forked"
        workers = _children(proc.pid)
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    for pid in workers:
        assert not Path(f"/proc/{pid}").exists()
