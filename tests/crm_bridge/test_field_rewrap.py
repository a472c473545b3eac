"""CRM field-key rotation followed by ``carebridge crm rewrap-fields`` (both backends).

The end-to-end test runs a live carebridge with a webhook subscription, events
in the outbox and a booking waiting for the HIS, all sealed under field key
``f1``; then, from the command line as an operator would: rotate, status,
rewrap, retire.  It reads the raw rows (no row may still name ``f1``, every
ciphertext must have changed) and checks that what the CRM and the HIS receive
afterwards is byte-for-byte what they would have received before, through the
*running* process (which must follow the rewritten key file on its own).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select

import crm_bridge.field_keys as field_keys
import fhir_store.batch_rewrite as batch_rewrite
from audit.schema import audit_event
from consent.keys import KeyStore
from consent.purposes import APPOINTMENT_REMINDER
from crm_bridge.delivery import read_feed, verify_signature
from crm_bridge.feed_start import register_feed
from crm_bridge.field_keys import FIELD_SEALED, field_keys_in_use, rewrap_fields
from crm_bridge.outbox import PendingEvent, append_events
from crm_bridge.schema import crm_his_outbox, crm_outbox
from fhir_store.database import make_engine, writer
from tests.crm_bridge.conftest import (
    CRM_ID,
    CrmClient,
    Receiver,
    appointment,
    counter_consent,
    full_patient,
    his,
    serve_crm,
)
from tests.crm_bridge.test_booking import HisPeer
from tests.gateway.test_encryption_at_rest import cli


def raw_field_rows(engine: Engine) -> dict[tuple[str, str], tuple[str, bytes]]:
    """``{(table.column, row key): (key id, ciphertext)}`` exactly as the database holds them."""
    out: dict[tuple[str, str], tuple[str, bytes]] = {}
    with engine.connect() as conn:
        for spec in FIELD_SEALED:
            cols = [spec.column(spec.order), spec.column(spec.kid), spec.column(spec.blob)]
            for key, kid, blob in conn.execute(select(*cols)):
                out[(spec.name, str(key))] = (str(kid), bytes(blob))
    return out


def field_key_ids(key_file: Path) -> set[str]:
    return set(json.loads(key_file.read_text())["field"]["keys"])


@pytest.fixture
def his_peer() -> Iterator[HisPeer]:
    peer = HisPeer("AA")
    yield peer
    peer.close()


def test_rotate_rewrap_retire_keeps_every_delivery_unchanged(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    receiver: Receiver,
    his_peer: HisPeer,
) -> None:
    key_file = tmp_path / "crm-keys.json"  # what serve_crm configures
    monkeypatch.setenv("CAREBRIDGE_CRM_KEY_FILE", str(key_file))
    db = ("--database-url", database_url)
    with serve_crm(database_url, tmp_path, crm_his_mllp=f"127.0.0.1:{his_peer.port}") as live:
        bridge = live.runtime.crm
        engine = live.runtime.engine
        crm = CrmClient(live)
        secret = crm.http.post("/subscriptions", json={"url": receiver.url}).json()["secret"]
        with his(live) as http:
            pid = http.post("/Patient", json=full_patient()).json()["id"]
            consent = counter_consent(pid, APPOINTMENT_REMINDER)
            assert http.post("/Consent", json=consent).status_code == 201
            assert http.post("/Appointment", json=appointment(pid)).status_code == 201
        feed_before = crm.feed()
        booked = crm.http.post(
            "/appointments",
            json={
                "subject": feed_before[-1]["subject"],
                "slot": {"start": "2026-12-02T09:00:00+07:00", "end": "2026-12-02T09:30:00+07:00"},
                "service": {"code": "NIENG"},
            },
        )
        assert booked.status_code == 202, booked.text
        with engine.connect() as conn:
            control_id, kid, sealed = conn.execute(
                select(crm_his_outbox.c.control_id, crm_his_outbox.c.key_id, crm_his_outbox.c.message)
            ).one()
        siu = KeyStore.load_or_create(str(key_file)).cipher.open(kid, bytes(sealed), control_id.encode())
        before = raw_field_rows(engine)
        assert {kid for kid, _ in before.values()} == {"f1"}
        assert {name for name, _ in before} == {s.name for s in FIELD_SEALED}  # every column has rows

        code, out, err = cli("crm", "rotate-field-key", *db)
        assert code == 0, err
        assert "f1 -> f2" in out
        code, out, _ = cli("crm", "status", *db)
        assert code == 0 and f"rows under old field keys: {len(before)}" in out
        assert "field key f2 (current)" in out and f"crm_outbox.payload: f1={len(feed_before)}" in out

        code, out, err = cli("crm", "rewrap-fields", *db, "--batch-size", "2", "--retire")
        assert code == 0, err
        assert f"rewrapped {len(before)} rows under field key f2" in out
        assert "old field keys unused: f1; not retired" in out  # the key file changed just now
        after = raw_field_rows(engine)
        assert after.keys() == before.keys()
        for row, (kid, blob) in after.items():
            assert kid == "f2", row
            assert blob != before[row][1], row  # re-encrypted, not just relabelled
        assert field_keys_in_use(engine) == {
            name: {"f2": sum(1 for n, _ in after if n == name)} for name in {s.name for s in FIELD_SEALED}
        }
        code, out, _ = cli("crm", "rewrap-fields", *db)
        assert code == 0 and out.startswith("rewrapped 0 rows")  # idempotent

        monkeypatch.setattr(field_keys, "SETTLE_S", 0.0)
        code, out, err = cli("crm", "rewrap-fields", *db, "--retire")
        assert code == 0, err
        assert "field keys retired (removed from the key file): f1" in out
        assert field_key_ids(key_file) == {"f2"}
        code, out, _ = cli("crm", "status", *db)
        assert "rows under old field keys: 0" in out and "keys in the file: f2" in out

        # the running process follows the key file: same feed, webhooks signed with the same secret,
        # the queued SIU^S12 reaches the HIS unchanged, and new events are sealed under f2
        assert crm.feed() == feed_before
        bridge.dispatcher.run_once()
        delivered = [json.loads(body) for _headers, body in receiver.received]
        assert delivered == feed_before
        for index, (_headers, body) in enumerate(receiver.received):
            assert verify_signature(secret.encode(), body, receiver.signature(index))
        assert bridge.booking.run_once() == 1
        assert his_peer.messages == [siu]
        new_events = crm.feed(feed_before[-1]["seq"])
        assert [e["type"] for e in new_events] == ["appointment.booked"]
        assert {kid for kid, _ in raw_field_rows(engine).values()} == {"f2"}
        crm.http.close()

        with engine.connect() as conn:
            events = [bytes(r[0]) for r in conn.execute(select(audit_event.c.content))]
        assert sum(b'"crm-rotate-field-key"' in e for e in events) == 1
        assert sum(b'"crm-rewrap-fields"' in e for e in events) == 3  # one per run


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url, pool_size=4)
    with eng.begin() as conn:  # the CRM is registered before any event: it reads them all
        register_feed(conn, CRM_ID)
    yield eng
    eng.dispose()


def _events(engine: Engine, keys: KeyStore, n: int) -> None:
    events = [PendingEvent(CRM_ID, "test.event", f"p{i}", f"s{i}", {"n": i}) for i in range(n)]
    with writer(engine).begin() as conn:
        append_events(conn, keys, events)


def _feed(engine: Engine, keys: KeyStore) -> list[dict[str, Any]]:
    return [e.body | {"seq": e.seq} for e in read_feed(engine, keys, CRM_ID, 0, 1000)]


def test_an_interrupted_rewrap_resumes_and_a_purged_row_is_skipped(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = KeyStore.load_or_create(str(tmp_path / "k.json"))
    _events(engine, keys, 7)
    feed = _feed(engine, keys)
    keys.rotate_field_key()

    class Interrupted(Exception):
        pass

    def stop_after_first_batch(_name: str, _done: int) -> None:
        raise Interrupted

    with pytest.raises(Interrupted):
        rewrap_fields(engine, keys, batch=3, progress=stop_after_first_batch)
    assert field_keys_in_use(engine)["crm_outbox.payload"] == {"f1": 4, "f2": 3}  # the first batch stays

    # an erasure purges a row between the batch's read and its write: skipped, not resurrected
    real_writer = batch_rewrite.writer  # type: ignore[attr-defined]  # the name the module looks up

    def purge_then_write(eng: Engine) -> Engine:
        with real_writer(eng).begin() as conn:
            conn.execute(delete(crm_outbox).where(crm_outbox.c.patient_id == "p5"))
        return real_writer(eng)

    monkeypatch.setattr(batch_rewrite, "writer", purge_then_write)
    report = rewrap_fields(engine, keys, batch=10)
    monkeypatch.setattr(batch_rewrite, "writer", real_writer)
    assert (report.total, report.skipped, report.unused) == (3, 1, ["f1"])
    assert field_keys_in_use(engine)["crm_outbox.payload"] == {"f2": 6}
    assert _feed(engine, keys) == [e for e in feed if e["subject"] != "s5"]
    assert rewrap_fields(engine, keys).total == 0

    # a fresh process holding only the current key reads everything once f1 is retired
    monkeypatch.setattr(field_keys, "SETTLE_S", 0.0)
    assert rewrap_fields(engine, keys, retire=True).retired == ["f1"]
    fresh = KeyStore.load_or_create(str(tmp_path / "k.json"))
    assert set(fresh.field.keys) == {"f2"}
    assert _feed(engine, fresh) == [e for e in feed if e["subject"] != "s5"]


def test_a_running_process_follows_a_rotation_made_elsewhere(tmp_path: Path) -> None:
    running = KeyStore.load_or_create(str(tmp_path / "k.json"))
    operator = KeyStore.load_or_create(str(tmp_path / "k.json"))
    assert operator.rotate_field_key() == ("f1", "f2")
    kid, blob = operator.cipher.seal(b"secret", b"row")
    assert kid == "f2"
    assert running.cipher.open(kid, blob, b"row") == b"secret"  # unknown key id: re-read at once
    assert running.cipher.seal(b"x", b"y")[0] == "f2"
    assert running.retire_field_keys(["f2"]) == []  # the current key is never retired


def test_rotation_is_refused_for_keys_held_in_the_environment(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = KeyStore.load_or_create(str(tmp_path / "k.json"))
    monkeypatch.setenv("CAREBRIDGE_CRM_KEYS", json.dumps(stored.document.data))
    code, _out, err = cli("crm", "rotate-field-key", "--database-url", database_url)
    assert code == 1 and "CAREBRIDGE_CRM_KEYS" in err
    code, out, err = cli("crm", "rewrap-fields", "--database-url", database_url)
    assert code == 0 and out.startswith("rewrapped 0 rows under field key f1"), err
