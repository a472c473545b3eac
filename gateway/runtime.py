"""Wiring: one place that builds the engine, the store and its hooks for every entry point.

``carebridge serve``, the CLI commands and the tests all go through
:class:`Runtime`, so the HTTP API, the MLLP listener and the workers share a
single store with the same hooks (audit, outbox) attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from audit.hooks import AuditHook
from fhir_store.database import make_engine
from fhir_store.migrations import upgrade
from fhir_store.repository import FhirStore
from gateway.logging_setup import configure_logging, get_logger
from gateway.settings import Settings

log = get_logger("carebridge.runtime")


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    store: FhirStore
    services: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, settings: Settings, *, migrate: bool = True) -> Runtime:
        if migrate:
            upgrade(settings.database_url)
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        audit = AuditHook.from_settings(engine, settings)
        store = FhirStore(engine, hooks=[audit], access_hooks=[audit])
        return cls(settings, engine, store, services={"audit": audit})

    def close(self) -> None:
        if isinstance(self.services.get("audit"), AuditHook):
            self.services["audit"].close()
        self.engine.dispose()


async def serve_forever(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """Run the HTTP API and the MLLP listener in one event loop until SIGINT/SIGTERM."""
    import uvicorn

    from gateway.http.app import create_app
    from gateway.mllp.server import MllpServer

    runtime = Runtime.create(settings)
    app = create_app(runtime)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
    )
    server = uvicorn.Server(config)
    mllp = MllpServer(runtime, settings.host, settings.mllp_port)
    await mllp.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    # We own SIGINT/SIGTERM so the MLLP listener stops too; uvicorn must not re-raise them.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    http_task = asyncio.create_task(server.serve())
    log.info("carebridge started", http_port=settings.http_port, mllp_port=mllp.port)
    if ready is not None:
        ready.set()
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await mllp.stop()
    with contextlib.suppress(Exception):
        await http_task
    stop_task.cancel()
    runtime.close()
    log.info("carebridge stopped")


def run(settings: Settings) -> None:
    configure_logging(settings.log_level)
    asyncio.run(serve_forever(settings))
