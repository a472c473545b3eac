"""40 parallel worst-case searches while HL7 flows: ACKs stay prompt, /readyz answers (issue #17)."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from common import SearchSettings
from gateway.mllp.server import MllpServer
from gateway.runtime import GIL_SWITCH_INTERVAL_S
from tests.http.conftest import FHIR_JSON
from tests.http.live import serve
from tests.mllp.conftest import a04

PARALLEL = 40


def worst_case_query(limits: SearchSettings) -> str:
    """As costly as the limits allow: most parameters, most values, substring matching, every include."""
    params = [("_total", "accurate"), ("_count", "1000")]
    params += [("_revinclude", "Encounter:subject"), ("_revinclude", "Appointment:actor")]
    chars = sum(len(k) + len(v) for k, v in params)
    index = 0
    while len(params) < limits.max_parameters:
        values: list[str] = []
        name = "name:contains"
        while len(values) < limits.max_values:
            value = f"q{index}"
            if chars + len(name) + len(",".join([*values, value])) > limits.max_query_chars:
                break
            values.append(value)
            index += 1
        if not values:
            break
        params.append((name, ",".join(values)))
        chars += len(name) + len(params[-1][1])
    return "&".join(f"{k}={v}" for k, v in params)


def send_hl7(port: int, message: bytes) -> tuple[float, bytes]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\x0b" + message + b"\x1c\r")
        answer = b""
        while not answer.endswith(b"\x1c\r"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    return time.monotonic() - started, answer


@pytest.fixture
def production_gil_interval() -> Iterator[None]:
    """`carebridge serve` runs with this switch interval (gateway.runtime.run); the test server must too."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    yield
    sys.setswitchinterval(before)


@pytest.mark.latency
def test_search_storm_leaves_hl7_acks_and_readyz_prompt(
    database_url: str, production_gil_interval: None
) -> None:
    limits = SearchSettings()
    query = worst_case_query(limits)
    with serve(database_url) as server:
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        mllp = MllpServer(server.runtime, "127.0.0.1", 0)
        asyncio.run_coroutine_threadsafe(mllp.start(), loop).result(30)
        try:
            for i in range(100):  # rows for the substring scans to read
                assert b"MSA|AA" in send_hl7(mllp.port, a04(f"SEED{i}", f"S{i:05d}"))[1]
            headers = {"Accept": FHIR_JSON, **server.headers}
            url = f"{server.fhir_url}/Patient?{query}"
            storm = subprocess.Popen(
                [sys.executable, "-m", "tests.support.storm_client", url, str(PARALLEL)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=Path(__file__).resolve().parents[2],
            )
            assert storm.stdin is not None and storm.stdout is not None
            try:
                storm.stdin.write(json.dumps(headers) + "\n")
                storm.stdin.flush()
                assert storm.stdout.readline().strip() == "started"
                time.sleep(1.0)  # let the storm build up
                ack_latencies: list[float] = []
                ready_latencies: list[float] = []
                ready_statuses: list[int] = []
                with httpx.Client(timeout=30) as probe:
                    for i in range(20):
                        latency, ack = send_hl7(mllp.port, a04(f"STORM{i}", f"T{i:05d}"))
                        assert b"MSA|AA" in ack
                        ack_latencies.append(latency)
                        started = time.monotonic()
                        ready_statuses.append(probe.get(f"{server.base_url}/readyz").status_code)
                        ready_latencies.append(time.monotonic() - started)
                out, _ = storm.communicate("stop\n", timeout=120)
            finally:
                if storm.poll() is None:
                    storm.kill()
                    storm.wait()
            statuses: list[int] = json.loads(out)
        finally:
            asyncio.run_coroutine_threadsafe(mllp.stop(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)
    assert len(statuses) >= PARALLEL  # every searcher got at least one answer
    assert set(statuses) <= {200, 503}, statuses  # answered, or cancelled by the statement timeout
    assert max(ack_latencies) < 1.0, ack_latencies
    assert ready_statuses == [200] * 20
    assert max(ready_latencies) < 2.0, ready_latencies
