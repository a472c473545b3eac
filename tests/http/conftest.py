"""A real carebridge HTTP server per test, on a free loopback port, for each backend.

The server is uvicorn running :func:`gateway.http.app.create_app` in a
background thread against the ``database_url`` fixture (SQLite and PostgreSQL,
already migrated), on a socket bound here so there is no port race.  Tests talk
to it over real HTTP (httpx, fhirpy), exactly as a client would.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn

from gateway.http.app import create_app
from gateway.runtime import Runtime
from gateway.settings import Settings

FHIR_JSON = "application/fhir+json"


@dataclass
class LiveServer:
    base_url: str
    runtime: Runtime

    @property
    def fhir_url(self) -> str:
        return f"{self.base_url}/fhir"


@pytest.fixture
def live_server(database_url: str) -> Iterator[LiveServer]:
    settings = Settings(database_url=database_url, host="127.0.0.1", http_port=0, db_pool_size=8)
    runtime = Runtime.create(settings, migrate=False)
    app = create_app(runtime)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off", timeout_keep_alive=30)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{port}", runtime)
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
        runtime.close()


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Accept": FHIR_JSON}
    with httpx.Client(base_url=live_server.fhir_url, headers=headers, timeout=30) as http:
        yield http


def fhir_post(http: httpx.Client, path: str, resource: dict[str, Any], **headers: str) -> httpx.Response:
    return http.post(path, json=resource, headers={"Content-Type": FHIR_JSON, **headers})


def patient(identifier: str, *, system: str = "urn:oid:1.2.704.0.1", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": identifier}],
        "name": [{"family": "Nguyễn", "given": ["Văn", "An"], "text": "Nguyễn Văn An"}],
        "gender": "male",
        "birthDate": "1985-03-12",
    }
    body.update(fields)
    return body
