"""Environmental database failures during HL7 ingest are not final answers (issue #17, item 2).

A connection cut (PostgreSQL ``pg_terminate_backend``) or a full disk (SQLite on a
small tmpfs) while a sender resends on AE: every message ends applied exactly
once, without ``carebridge hl7 replay``.
"""

from __future__ import annotations

import ipaddress
import random
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from audit import chain_length
from common import Hl7Settings
from common.identifiers import mrn_system
from fhir_store import journal, transient_kind
from fhir_store.schema import hl7_journal, resource_current
from fhir_store.writer import find_identifier_owner
from gateway.ingest import Ingestor
from gateway.ingest_transient import DuplicateAudit
from gateway.mllp.client import parse_ack
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.support.settings import open_settings
from tests.support.tmpfs import SmallDisk, small_disk, truncate_wal
from tests.test_ingest import a04

MESSAGES = 24


def _wrapped(orig: BaseException) -> OperationalError:
    return OperationalError("INSERT ...", {}, orig)


def test_classification_by_sqlstate_and_sqlite_code() -> None:
    assert transient_kind(_wrapped(psycopg.errors.AdminShutdown())) == "interrupted"  # 57P01
    assert transient_kind(_wrapped(psycopg.errors.QueryCanceled())) == "interrupted"  # 57014
    assert transient_kind(_wrapped(psycopg.errors.DiskFull())) == "resources"  # 53100
    assert transient_kind(_wrapped(psycopg.errors.SerializationFailure())) == "conflict"  # 40001
    assert transient_kind(_wrapped(psycopg.errors.ConnectionFailure())) == "connection"  # 08006
    assert transient_kind(_wrapped(psycopg.errors.UniqueViolation())) is None  # 23505: content
    assert transient_kind(_wrapped(psycopg.errors.InvalidTextRepresentation())) is None  # 22P02
    for text, kind in [
        ("database or disk is full", "disk-full"),
        ("disk I/O error", "io"),
        ("database is locked", "locked"),
        ("unable to open database file", "unavailable"),
        ("attempt to write a readonly database", "read-only"),
    ]:
        assert transient_kind(_wrapped(sqlite3.OperationalError(text))) == kind
    assert transient_kind(_wrapped(sqlite3.OperationalError("no such column: x"))) is None
    assert transient_kind(ValueError("x")) is None


class Cutter:
    """Cuts the database away from the runtime (``cut``) and lets it back (``heal``)."""

    def __init__(self, cut: Callable[[], None], heal: Callable[[], None]) -> None:
        self.cut, self.heal = cut, heal


@pytest.fixture
def cut_runtime(backend: str, database_url: str, tmp_path: Path) -> Iterator[tuple[Runtime, Cutter]]:
    settings_hl7 = Hl7Settings(transient_retries=0)  # every failure reaches the sender as AE
    if backend == "sqlite":
        source = Path(database_url.removeprefix("sqlite:///"))
        with small_disk(tmp_path / "disk") as disk:
            target = disk.root / "carebridge.db"
            shutil.copyfile(source, target)
            rt = Runtime.create(
                open_settings(database_url=f"sqlite:///{target}", hl7=settings_hl7), migrate=False
            )

            def fill(disk: SmallDisk = disk) -> None:
                truncate_wal(target)  # the next write must grow the WAL, on a full volume
                disk.fill()

            try:
                yield rt, Cutter(fill, disk.free)
            finally:
                disk.free()
                rt.close()
        return
    rt = Runtime.create(open_settings(database_url=database_url, hl7=settings_hl7), migrate=False)
    admin = psycopg.connect(database_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)

    def terminate() -> None:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )

    try:
        yield rt, Cutter(terminate, lambda: None)
    finally:
        admin.close()
        rt.close()


def test_cut_loop_every_message_applied_exactly_once(
    backend: str, cut_runtime: tuple[Runtime, Cutter]
) -> None:
    runtime, cutter = cut_runtime
    ingestor = Ingestor(runtime.store, runtime.settings)
    stop = threading.Event()
    killer: threading.Thread | None = None
    if backend == "postgresql":  # also cut at random moments, mid-transaction

        def kill_loop() -> None:
            rng = random.Random(17)
            while not stop.wait(rng.uniform(0.02, 0.25)):
                cutter.cut()

        killer = threading.Thread(target=kill_loop, daemon=True)
        killer.start()
    temporary = 0
    try:
        for n in range(MESSAGES):
            raw = a04(f"CUT{n}", f"CUT-{n}")
            if n % 2 == 0:
                cutter.cut()
            for _attempt in range(500):  # the sender resends on AE
                outcome = ingestor.handle(raw)
                ack = parse_ack(outcome.acks[0])
                if ack.code == "AA":
                    break
                assert ack.code == "AE" and "temporary database failure" in ack.text, ack.text
                assert outcome.status == "received"  # not stored as the final answer
                temporary += 1
                cutter.heal()
            else:
                pytest.fail(f"CUT{n} never applied")
    finally:
        stop.set()
        if killer is not None:
            killer.join()
        cutter.heal()
    assert temporary > 0  # the cuts did reach the sender
    assert journal.count_by_status(runtime.engine) == {"processed": MESSAGES}
    with runtime.engine.connect() as conn:
        rows = conn.execute(
            select(hl7_journal.c.control_id, func.count()).group_by(hl7_journal.c.control_id)
        ).all()
        assert sorted(rows) == sorted((f"CUT{n}", 1) for n in range(MESSAGES))
        patients = conn.execute(
            select(func.count()).select_from(resource_current).where(resource_current.c.res_type == "Patient")
        ).scalar()
        assert patients == MESSAGES
        for n in range(MESSAGES):
            blinded = runtime.store.cipher.blind(f"CUT-{n}")
            owner = find_identifier_owner(conn, "Patient", mrn_system("PK_CU"), blinded)
            assert owner is not None
    assert sum(ingestor.metrics.transient_snapshot().values()) >= temporary


def _events(runtime: Runtime) -> int:
    with runtime.engine.connect() as conn:
        return chain_length(conn)


def test_duplicate_deliveries_leave_one_audit_event_per_interval(database_url: str) -> None:
    runtime = Runtime.create(open_settings(database_url=database_url), migrate=False)
    try:
        now = [0.0]
        ingestor = Ingestor(runtime.store, runtime.settings)
        ingestor.duplicate_audit = DuplicateAudit(60.0, clock=lambda: now[0])
        raw = a04("DUP1", "DUP-1")
        first = ingestor.handle(raw)
        runtime.audit.close()
        before = _events(runtime)
        for _ in range(50):
            again = ingestor.handle(raw)
            assert again.duplicate and again.acks == first.acks
        runtime.audit.close()
        assert _events(runtime) == before + 1  # the first duplicate, not 50 events
        now[0] = 61.0
        ingestor.handle(raw)
        runtime.audit.close()
        assert _events(runtime) == before + 2  # one more, standing for 50 deliveries
        assert ingestor.metrics.duplicates() == 51
    finally:
        runtime.close()


def test_duplicate_audit_counts_deliveries() -> None:
    now = [0.0]
    limiter = DuplicateAudit(10.0, clock=lambda: now[0])
    assert limiter.admit(1) == 1
    assert [limiter.admit(1) for _ in range(4)] == [None] * 4
    assert limiter.admit(2) == 1
    now[0] = 10.5
    assert limiter.admit(1) == 5
    assert limiter.admit(1) is None


def test_unreadable_sender_registry_is_not_a_final_answer(database_url: str) -> None:
    """The registry read failed (fail closed, AE): the resend is checked again and applied."""
    from gateway.hl7_senders import RegisteredSender

    runtime = Runtime.create(Settings(database_url=database_url), migrate=False)
    registry_up = [False]

    def lookup(application: str, facility: str) -> RegisteredSender | None:
        if not registry_up[0]:
            raise _wrapped(psycopg.errors.AdminShutdown())
        return RegisteredSender(application, facility, (ipaddress.ip_network("127.0.0.0/8"),), None, True)

    try:
        ingestor = Ingestor(runtime.store, runtime.settings, senders=lookup)
        raw = a04("REG1", "REG-1")
        refused = ingestor.handle(raw, peer="127.0.0.1:40000")
        assert parse_ack(refused.acks[0]).code == "AE"
        registry_up[0] = True
        applied = ingestor.handle(raw, peer="127.0.0.1:40000")
        assert (parse_ack(applied.acks[0]).code, applied.duplicate) == ("AA", False)
    finally:
        runtime.close()
