"""Run the real carebridge HTTP server in a background thread (shared by the HTTP and schemathesis tests)."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn

from gateway.auth.clients import ClientRegistry
from gateway.http.app import create_app
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.support import TEST_SECRET_LOG2N


@dataclass
class LiveServer:
    base_url: str
    runtime: Runtime
    headers: dict[str, str] = field(default_factory=dict)  # a his_integration bearer token
    app: Any = None  # the FastAPI app (tests reach app.state through it)

    @property
    def fhir_url(self) -> str:
        return f"{self.base_url}/fhir"

    def token(
        self,
        role: str,
        scopes: str | None = None,
        *,
        patient_id: str | None = None,
        requested: str | None = None,
    ) -> str:
        """Register a client of ``role`` and get a real token from ``POST /auth/token``."""
        client_id = f"{role}-{uuid.uuid4().hex[:8]}"
        secret = ClientRegistry(self.runtime.engine, secret_log2n=TEST_SECRET_LOG2N).add(
            client_id, role, scopes, patient_id=patient_id
        )
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret or ""}
        if requested:
            form["scope"] = requested
        response = httpx.post(f"{self.base_url}/auth/token", data=form, timeout=30)
        response.raise_for_status()
        return str(response.json()["access_token"])

    def auth(self, role: str, scopes: str | None = None, **kwargs: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(role, scopes, **kwargs)}"}


@contextmanager
def serve(database_url: str, **overrides: Any) -> Iterator[LiveServer]:
    """uvicorn on a socket bound here (no port race) against an already migrated database."""
    settings = Settings.from_env(
        {}, database_url=database_url, host="127.0.0.1", http_port=0, db_pool_size=8, **overrides
    )
    runtime = Runtime.create(settings, migrate=False)
    app = create_app(runtime)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
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
        live = LiveServer(f"http://127.0.0.1:{port}", runtime, app=app)
        live.headers = live.auth("his_integration")
        yield live
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()
        runtime.close()
