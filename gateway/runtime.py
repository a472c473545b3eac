"""Wiring: one place that builds the engine, the store and its hooks for every entry point.

``carebridge serve``, the CLI commands and the tests all go through
:class:`Runtime`, so the HTTP API, the MLLP listener and the workers share a
single store with the same hook chain (``gateway.store_pipeline.declare_pipeline``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import threading
from dataclasses import dataclass, field

from sqlalchemy import Engine

from audit import AuditHook
from consent import RightsService
from crm_bridge import CrmBridge
from fhir_store import FhirStore, make_engine, open_cipher, upgrade
from gateway.auth.policy import ScopePolicyHook
from gateway.auth.tokens import TokenService, token_service
from gateway.logging_setup import configure_logging, get_logger
from gateway.metrics import Hl7Counters, WebhookLatency
from gateway.registration import register_all
from gateway.settings import Settings
from gateway.store_pipeline import declare_pipeline

log = get_logger("carebridge.runtime")

GIL_SWITCH_INTERVAL_S = 0.0005


@dataclass
class Runtime:
    """Everything one process serves with: the store (its hook chain declared in
    ``gateway.store_pipeline``) and the services the entry points reach."""

    settings: Settings
    engine: Engine
    store: FhirStore
    audit: AuditHook
    crm: CrmBridge
    privacy: RightsService
    tokens: TokenService
    # HTTP reads and searches (statement timeout on PostgreSQL) and /readyz have pools of
    # their own, so neither a search storm nor a slow probe can take ingest's connections
    read_engine: Engine
    health_engine: Engine
    hl7_counters: Hl7Counters = field(default_factory=Hl7Counters)
    webhook_latency: WebhookLatency = field(default_factory=WebhookLatency)

    @classmethod
    def create(cls, settings: Settings, *, migrate: bool = True) -> Runtime:
        if migrate:
            upgrade(settings.migration_url)
        engine = make_engine(settings.database_url, pool_size=settings.db_pool_size)
        search = settings.search
        read_engine = make_engine(
            settings.database_url,
            pool_size=search.pool_size,
            statement_timeout_ms=search.statement_timeout_ms,
        )
        health_engine = make_engine(settings.database_url, pool_size=1)
        register_all()
        cipher = open_cipher(engine, settings.store.key_source)  # refuses a key file that does not match
        audit = AuditHook.from_settings(engine, settings.audit)
        store = FhirStore(
            engine,
            cipher=cipher,
            read_autocommit=settings.audit.async_reads,
            read_engine=read_engine,
            limits=search,
            write_timeout_ms=settings.store.write_statement_timeout_ms,
        )
        from gateway.crm_wiring import build_crm_bridge  # consent + CRM outbox hooks (issue #5)

        crm = build_crm_bridge(engine, store, settings, audit)
        from consent import TombstoneHook, build_rights  # patient-rights workflow (issue #6)

        privacy = build_rights(store, settings.privacy, audit, processors=crm.processors())
        store.pipeline = declare_pipeline(
            policy=ScopePolicyHook(),
            intake=crm.intake,
            audit=audit,
            tombstones=TombstoneHook(audit.writer, cipher=cipher),
            outbox=crm.hook,
        )
        tokens = token_service(engine, cipher, settings)
        runtime = cls(settings, engine, store, audit, crm, privacy, tokens, read_engine, health_engine)
        # measured from the first delivery, not from the first /metrics scrape
        crm.dispatcher.on_delivery = runtime.webhook_latency.observe
        return runtime

    def close(self) -> None:
        self.crm.stop()
        self.audit.close()
        self.engine.dispose()
        self.read_engine.dispose()
        self.health_engine.dispose()


def prepare_keys(settings: Settings) -> None:
    """Create (new database) or check the key files once, in this process, before workers fork.

    The store key file, and a pseudonym key for every configured CRM: processes that
    started together must not each make up a different key for a new CRM.
    """
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        register_all()  # a first start may rebuild the blind index: every search parameter counts
        open_cipher(engine, settings.store.key_source)
    finally:
        engine.dispose()
    from consent import KeyStore
    from crm_bridge import ProjectionConfig

    crm = settings.crm
    keys = KeyStore.load_or_create(crm.key_source)
    for crm_id in ProjectionConfig.load(crm.projection_file).clients:
        keys.ring_for(crm_id)


async def serve_forever(
    settings: Settings, *, ready: asyncio.Event | None = None, http_socket: socket.socket | None = None
) -> None:
    """Run the HTTP API and the MLLP listener in one event loop until SIGINT/SIGTERM."""
    import uvicorn

    from gateway.http.app import create_app
    from gateway.mllp.server import MllpServer
    from gateway.privacy_clocks import watch_privacy_clocks

    runtime = Runtime.create(settings)
    app = create_app(runtime)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.http.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_keep_alive=30,
        proxy_headers=False,  # X-Forwarded-* only from CAREBRIDGE_HTTP_TRUSTED_PROXIES (create_app)
    )
    server = uvicorn.Server(config)
    mllp = MllpServer(runtime, settings.host, settings.mllp.port)
    await mllp.start()
    runtime.crm.webhooks.listening_on(mllp.port)  # the bound port, should the setting be 0
    runtime.crm.start()  # webhook dispatcher + HIS booking sender (threads)
    clocks_task = asyncio.create_task(watch_privacy_clocks(runtime))  # near-due privacy requests
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    if _STOP_REQUESTED.is_set():  # a SIGTERM while starting up (see run): stop once started
        stop.set()
    # We own SIGINT/SIGTERM so the MLLP listener stops too; uvicorn must not re-raise them.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
    http_task = asyncio.create_task(server.serve(sockets=[http_socket] if http_socket else None))
    log.info("carebridge started", http_port=settings.http.port, mllp_port=mllp.port)
    if ready is not None:
        ready.set()
    stop_task = asyncio.create_task(stop.wait())
    await asyncio.wait({http_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    await mllp.stop()
    with contextlib.suppress(Exception):
        await http_task
    stop_task.cancel()
    clocks_task.cancel()
    runtime.close()
    log.info("carebridge stopped")


def _bind_http_socket(settings: Settings) -> socket.socket:
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only for sockets
    # that say they are TCP, and without it small responses wait for the peer's delayed ACK.
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((settings.host, settings.http.port))
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


async def _serve_http_only(settings: Settings, sock: socket.socket) -> None:
    """An extra HTTP worker process: same app and store, no MLLP listener, no background workers."""
    import uvicorn

    from gateway.http.app import create_app

    runtime = Runtime.create(settings, migrate=False)
    config = uvicorn.Config(
        create_app(runtime), log_config=None, access_log=False, timeout_keep_alive=30, proxy_headers=False
    )
    try:
        await uvicorn.Server(config).serve(sockets=[sock])
    finally:
        runtime.close()


_STOP_REQUESTED = threading.Event()


def _note_stop(_signum: int, _frame: object) -> None:
    """SIGTERM before the event loop handles it: remember it, finish starting, then stop cleanly.

    Raising from a signal handler is not reliable: the exception surfaces in whatever Python code
    runs at that moment, and inside a garbage-collector or weakref callback it is printed and
    dropped, leaving a server that ignored its stop signal.
    """
    _STOP_REQUESTED.set()


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGTERM to this worker if the main process dies, however it dies."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def run(settings: Settings) -> None:
    """Start carebridge; with ``CAREBRIDGE_HTTP_WORKERS`` > 1, extra processes share the HTTP socket.

    One Python process uses one core (the GIL); reads and searches scale with
    processes.  Workers are forked before any engine or thread exists, after the
    migrations ran once, and are stopped with the main process.
    """
    configure_logging(settings.log_level)
    # Threads that wait on the database (MLLP lanes, HTTP) must get the GIL back promptly
    # from threads burning CPU; with CPython's default hand-over interval they queue behind
    # them (bench/mllp_ingest.py; docs/benchmarks.md, "Design figures").
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    if settings.http.workers <= 1:
        asyncio.run(serve_forever(settings))
        return
    upgrade(settings.migration_url)
    prepare_keys(settings)  # before forking: workers must not race to create the store key file
    sock = _bind_http_socket(settings)
    # A SIGTERM that arrives before the event loop installs its handlers must still stop the
    # workers: noted, and serve_forever stops as soon as it has started, through the ``finally``
    # below, instead of dying with them orphaned.
    signal.signal(signal.SIGTERM, _note_stop)
    children: list[int] = []
    for _ in range(settings.http.workers - 1):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child process
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            _die_with_parent()
            try:
                asyncio.run(_serve_http_only(settings, sock))
            finally:
                os._exit(0)
        children.append(pid)
    try:
        asyncio.run(serve_forever(settings, http_socket=sock))
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        for pid in children:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
