"""Fixtures for the MLLP tests: an in-process listener on loopback, sample messages, a `serve` subprocess.

``mllp_server`` runs the real :class:`~gateway.mllp.server.MllpServer` in its own event-loop
thread so tests can talk to it with ordinary blocking sockets (the same way a HIS would).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fhir_store.writer import find_identifier_owner
from gateway.hl7_senders import SenderLookup, SenderPolicy
from gateway.ingest import Ingestor
from gateway.mllp.server import MllpServer
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.support.settings import OPEN_MLLP, OPEN_MLLP_ENV
from tests.support.store_keys import KEY_FILE

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7v2"
ROOT = Path(__file__).resolve().parents[2]
CAREBRIDGE = str(Path(sys.executable).with_name("carebridge"))

# Sensible arrival order: registration before update/discharge/merge, booking before changes.
GOOD_ORDER = [
    "adt_a04_register_outpatient",
    "adt_a08_update_patient",
    "adt_a01_admit_inpatient",
    "adt_a03_discharge_service_completed",
    "adt_a04_latin1_charset",
    "adt_a28_add_person",
    "siu_s12_new_appointment",
    "siu_s13_reschedule",
    "siu_s15_cancel",
    "siu_s26_noshow",
    "adt_a40_merge_duplicate",
]
BAD = ["bad_invalid_birthdate", "bad_missing_patient_id", "bad_no_msh", "bad_unsupported_trigger"]


def sample(name: str) -> bytes:
    """A fixture message with CR segment ends (files may use LF)."""
    data = (FIXTURES / f"{name}.hl7").read_bytes()
    return data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def a04(control_id: str, mrn: str, *, app: str = "HIS_VN", fac: str = "BVDK_HN", extra: str = "") -> bytes:
    """A small valid ADT^A04 with Vietnamese content."""
    return (
        f"MSH|^~\\&|{app}|{fac}|FHIRGATE|CRM|20261120083000+0700||ADT^A04^ADT_A01|{control_id}|P|2.5"
        f"{extra}\rEVN|A04|20261120083000+0700\r"
        f"PID|1||{mrn}^^^{fac}^MR||Nguyễn^An^Văn^^^^L||19850312|M|||||0912345678\r"
    ).encode()


@dataclass
class RunningServer:
    server: MllpServer
    runtime: Runtime
    loop: asyncio.AbstractEventLoop

    @property
    def port(self) -> int:
        return self.server.port

    def owner(self, resource_type: str, system: str, value: str) -> dict[str, Any] | None:
        with self.runtime.engine.connect() as conn:
            res_id = find_identifier_owner(
                conn, resource_type, system, self.runtime.store.cipher.blind(value)
            )
        return None if res_id is None else self.runtime.store.read(resource_type, res_id).resource()

    def call(self, coro: Any, timeout: float = 30) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


@pytest.fixture
def start_server(database_url: str) -> Iterator[Callable[..., RunningServer]]:
    started: list[RunningServer] = []

    def start(
        *,
        policy: SenderPolicy | None = None,
        ssl_context: Any = None,
        senders: SenderLookup | None = None,
        **overrides: Any,
    ) -> RunningServer:
        settings = Settings.from_env(
            {}, database_url=database_url, db_pool_size=8, **{**OPEN_MLLP, **overrides}
        )
        runtime = Runtime.create(settings, migrate=False)
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        ingestor = Ingestor(runtime.store, settings, policy=policy, senders=senders)
        server = MllpServer(runtime, "127.0.0.1", 0, ingestor=ingestor, ssl_context=ssl_context)
        running = RunningServer(server, runtime, loop)
        running.call(server.start())
        started.append(running)
        return running

    yield start
    for running in started:
        running.call(running.server.stop())
        running.loop.call_soon_threadsafe(running.loop.stop)
        running.runtime.close()


@pytest.fixture
def mllp(start_server: Callable[..., RunningServer]) -> RunningServer:
    return start_server()


# ---------------------------------------------------------------------------- `carebridge serve`

_PORT_RE = re.compile(rb'"mllp_port":\s*(\d+)')


class ServeProcess:
    """``carebridge serve`` as a subprocess; the MLLP port is read from its start-up log line.

    ``crash_after_journal`` runs it through :mod:`tests.mllp.crash_serve`, which makes the
    process die right after its first journal commit (before the ACK).
    """

    def __init__(
        self,
        database_url: str,
        tmp: Path,
        env: dict[str, str] | None = None,
        *,
        crash_after_journal: bool = False,
        http_port: int = 0,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        full_env = {
            **os.environ,
            "CAREBRIDGE_LOG_LEVEL": "INFO",
            "CAREBRIDGE_STORE_KEY_FILE": KEY_FILE,  # the keys tests/support/store_keys.py opens too
            **OPEN_MLLP_ENV,  # unregistered senders (tests/support/settings.py); env may turn it off
            **(env or {}),
        }
        full_env.pop("CAREBRIDGE_DATABASE_URL", None)
        command = [CAREBRIDGE]
        if crash_after_journal:
            command = [sys.executable, "-m", "tests.mllp.crash_serve"]
            full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), full_env.get("PYTHONPATH")]))
        self.log_path = tmp / f"serve-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                *command,
                "serve",
                "--http-port",
                str(http_port),
                "--mllp-port",
                "0",
                "--database-url",
                database_url,
            ],
            stdout=self._log,
            preexec_fn=preexec_fn,
            stderr=subprocess.STDOUT,
            env=full_env,
            cwd=str(tmp),
        )
        self.port = self._wait_port()

    def _wait_port(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_path.read_bytes()
            for line in text.splitlines():
                if b"carebridge started" in line or b"mllp listening" in line:
                    match = _PORT_RE.search(line) or re.search(rb'"port":\s*(\d+)', line)
                    if match:
                        return int(match.group(1))
            if self.proc.poll() is not None:
                raise RuntimeError(f"carebridge serve exited: {text.decode(errors='replace')[-2000:]}")
            time.sleep(0.05)
        raise RuntimeError("carebridge serve did not start")

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_path.read_bytes().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return int(self.proc.returncode)


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    running: list[ServeProcess] = []

    def start(
        database_url: str,
        env: dict[str, str] | None = None,
        *,
        crash_after_journal: bool = False,
        http_port: int = 0,
        preexec_fn: Callable[[], None] | None = None,
    ) -> ServeProcess:
        process = ServeProcess(
            database_url,
            tmp_path,
            env,
            crash_after_journal=crash_after_journal,
            http_port=http_port,
            preexec_fn=preexec_fn,
        )
        running.append(process)
        return process

    yield start
    for process in running:
        process.stop()
