"""/readyz reflects the ability to write and to keep up (issue #17, item 3); /healthz stays liveness."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from fhir_store import journal
from fhir_store.schema import hl7_journal
from gateway.ingest import Ingestor
from gateway.mllp.client import parse_ack
from tests.http.live import serve
from tests.support.tmpfs import small_disk, truncate_wal
from tests.test_ingest import a04


def test_full_disk_turns_readyz_red_and_back(sqlite_template: Path, tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", size="16m") as disk:
        target = disk.root / "carebridge.db"
        shutil.copyfile(sqlite_template, target)
        try:
            with (
                serve(f"sqlite:///{target}", store_min_free_bytes=1024 * 1024) as live,
                httpx.Client(base_url=live.base_url) as http,
            ):
                ingestor = Ingestor(live.runtime.store, live.runtime.settings)
                assert http.get("/readyz").status_code == 200
                truncate_wal(target)
                disk.fill()
                ready = http.get("/readyz")
                assert ready.status_code == 503
                assert any(r.startswith("disk: ") for r in ready.json()["reasons"]), ready.json()
                assert http.get("/healthz").status_code == 200  # liveness only
                refused = ingestor.handle(a04("FULL1", "FULL-1"))
                assert parse_ack(refused.acks[0]).code == "AE"
                reasons = http.get("/readyz").json()["reasons"]
                assert any(r.startswith("commits: the last write failed (disk-full)") for r in reasons), (
                    reasons
                )
                disk.free()
                # space is back, but no write has committed since the failure: still red
                reasons = http.get("/readyz").json()["reasons"]
                assert [r for r in reasons if r.startswith("commits:")] and not [
                    r for r in reasons if r.startswith("disk:")
                ]
                applied = ingestor.handle(a04("FULL1", "FULL-1"))  # the sender's resend
                assert parse_ack(applied.acks[0]).code == "AA"
                ready = http.get("/readyz")
                assert ready.status_code == 200, ready.text
                assert ready.json()["reasons"] == []
        finally:
            disk.free()


def test_journal_backlog_turns_readyz_red_until_applied(database_url: str) -> None:
    with serve(database_url) as live, httpx.Client(base_url=live.base_url) as http:
        runtime = live.runtime
        raw = a04("BL1", "BL-1")
        journal_id = journal.insert_message(
            runtime.engine,
            raw=raw,
            peer="",
            sending_application="HIS_OLD",
            sending_facility="PK_CU",
            control_id="BL1",
            message_type="ADT^A04",
            cipher=runtime.store.cipher,
        )
        assert http.get("/readyz").status_code == 200  # waiting, but not for long
        with runtime.engine.begin() as conn:
            conn.execute(
                update(hl7_journal)
                .where(hl7_journal.c.id == journal_id)
                .values(received_us=hl7_journal.c.received_us - 3_600_000_000)
            )
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert any(r.startswith("backlog: ") for r in ready.json()["reasons"]), ready.json()
        outcome = Ingestor(runtime.store, runtime.settings).handle(raw)  # the resend applies it
        assert outcome.status == "processed"
        assert http.get("/readyz").status_code == 200


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_stopped_dispatcher_turns_readyz_red(database_url: str) -> None:
    with serve(database_url) as live, httpx.Client(base_url=live.base_url) as http:
        runtime = live.runtime
        assert http.get("/readyz").status_code == 200  # never started here: not its job
        runtime.crm.dispatcher.start()
        assert http.get("/readyz").status_code == 200
        runtime.crm.dispatcher.stop()  # its thread is gone
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert "dispatcher: the webhook dispatcher is not running" in ready.json()["reasons"]
