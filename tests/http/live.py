"""Run the real carebridge HTTP server in a background thread (shared by the HTTP and schemathesis tests)."""

from __future__ import annotations

import asyncio
import contextlib
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
from tests.support.settings import OPEN_MLLP


class _PromptServer(uvicorn.Server):
    """uvicorn that stops as soon as a test is done with it.

    uvicorn looks at ``should_exit`` once per 0.1 s tick and then sleeps a fixed
    0.1 s before polling its connections every 0.1 s: fine for a process that
    stops once, a quarter of a second of teardown for each of several hundred
    live-server tests.  Here :meth:`stop` wakes the tick at once, and the
    shutdown polls the connections it has asked to close every few
    milliseconds (same steps and the same grace as uvicorn: stop accepting,
    ask every connection to finish, wait for them and their tasks).
    """

    POLL_S = 0.005
    GRACE_S = 20.0

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake = asyncio.Event()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        self._loop = asyncio.get_running_loop()  # before ``started``: stop() can always reach it
        await super().serve(sockets)

    async def main_loop(self) -> None:
        counter = 0
        while not await self.on_tick(counter):  # on_tick also refreshes the Date header
            counter = (counter + 1) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), 0.1)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            connection.shutdown()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.GRACE_S
        while (self.server_state.connections or self.server_state.tasks) and loop.time() < deadline:
            await asyncio.sleep(self.POLL_S)
        for task in self.server_state.tasks:
            task.cancel(msg="test server stopped")
        for server in self.servers:
            await server.wait_closed()
        await self.lifespan.shutdown()

    def stop(self) -> None:
        """Called from the test's thread."""
        self.should_exit = True
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._wake.set)


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
    # tests feed HL7 through this runtime from unregistered senders: open mode (tests/support/settings.py)
    overrides = {**OPEN_MLLP, **overrides}
    settings = Settings.from_env(
        {}, database_url=database_url, host="127.0.0.1", http_port=0, db_pool_size=8, **overrides
    )
    runtime = Runtime.create(settings, migrate=False)
    app = create_app(runtime)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)  # TCP_NODELAY
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    runtime.crm.webhooks.listening_on(port)  # as `carebridge serve` does: never a webhook target
    config = uvicorn.Config(
        app, log_config=None, access_log=False, lifespan="off", timeout_keep_alive=30, proxy_headers=False
    )
    server = _PromptServer(config)
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
        server.stop()
        thread.join(timeout=20)
        sock.close()
        runtime.close()
