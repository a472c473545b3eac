"""Side tables at rest: after a realistic flow, no personal data in clear in any raw row (both backends).

The flow: every good HL7 sample, a REST patient with CCCD/BHYT/phone/e-mail,
CRM consents and signed webhooks, a CRM booking the HIS refuses with a text
naming the patient, a paged search, and the patient-rights workflow (access
export, rectification with extension and close, erasure with a CRM deletion
receipt), with free text full of names, phones and numbers.  Then the raw rows
of the store tables, the ``privacy_*`` tables, ``search_snapshot`` and the CRM
tables are scanned (what a dump shows); after ``store rotate-key`` + ``rewrap``
every sealed side-table value is under the new key and still reads back.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select, update

from consent.purposes import APPOINTMENT_REMINDER, POST_VISIT_CARE
from consent.rights.schema import PRIVACY_TABLES, privacy_request, privacy_tombstone
from consent.rights.tombstones import lookup_hashes, subject_hashes, tombstoned
from crm_bridge.schema import CRM_TABLES, crm_his_outbox
from fhir_store.key_registry import open_cipher
from fhir_store.rewrap import keys_in_use, rewrap
from fhir_store.schema import search_snapshot
from gateway.ingest import Ingestor
from tests.crm_bridge.conftest import CrmClient, Receiver, counter_consent, serve_crm, wait_for
from tests.crm_bridge.test_booking import HisPeer
from tests.gateway.test_encryption_at_rest import (
    CCCD,
    HL7_SECRETS,
    REST_SECRETS,
    SCANNED,
    cli,
    dump,
    rest_patient,
    search,
)
from tests.http.live import LiveServer
from tests.mllp.conftest import BAD, GOOD_ORDER, sample
from tests.rights.conftest import privacy
from tests.support.at_rest_scan import REST_PERSON, leaks, sample_secrets

NAME = "Trần Thị Lan"
PHONE = "0987111222"
HIS_REFUSAL = f"Benh nhan Tran Thi Lan ({PHONE}) khong co lich"  # ASCII: the ACK is parsed as sent
SIDE_TABLES = (*PRIVACY_TABLES, *CRM_TABLES, search_snapshot)
SIDE_SECRETS = [NAME, "Tran Thi Lan", "quầy số 3"]
SECRETS = sample_secrets() + REST_PERSON + SIDE_SECRETS
SEARCHES = [
    ({"name": "Nguyễn Văn"}, 1),
    ({"family": "tran"}, 1),
    ({"name:contains": "guyen van"}, 1),
    ({"name:exact": "Trần Thị Lan"}, 1),
    ({"birthdate": "1985-03-12"}, 1),
    ({"birthdate": "ge1990-07-04", "gender": "female"}, 3),
    ({"address": "88 tran hung"}, 1),
]


@pytest.fixture
def flow_live(database_url: str, tmp_path: Path) -> Iterator[tuple[LiveServer, HisPeer, str]]:
    peer = HisPeer("AR", HIS_REFUSAL)
    key_file = str(tmp_path / "store-keys.json")  # this test rotates keys: not the shared file
    try:
        with serve_crm(
            database_url,
            tmp_path,
            store_key_file=key_file,
            privacy_tombstone_file=str(tmp_path / "tombstones.jsonl"),
            crm_his_mllp=f"127.0.0.1:{peer.port}",
        ) as live:
            yield live, peer, key_file
    finally:
        peer.close()


def in_clear(engine: Engine) -> list[str]:
    everything = dump(engine, (*SCANNED, *SIDE_TABLES))
    side = dump(engine, SIDE_TABLES)
    found = [s for s in HL7_SECRETS + REST_SECRETS if s.encode() in everything]
    return found + [s for s in SIDE_SECRETS if s.encode() in side]


@pytest.mark.slow
def test_side_tables_hold_no_personal_data_in_clear(
    flow_live: tuple[LiveServer, HisPeer, str], receiver: Receiver, database_url: str
) -> None:
    live, peer, key_file = flow_live
    engine = live.runtime.engine
    crm = CrmClient(live)
    assert crm.http.post("/subscriptions", json={"url": receiver.url}).status_code == 201
    ingestor = Ingestor(live.runtime.store, live.runtime.settings)
    assert {ingestor.handle(sample(n)).ack_code for n in GOOD_ORDER} == {"AA"}
    assert {ingestor.handle(sample(n)).ack_code for n in BAD} <= {"AE", "AR"}  # journaled with their errors
    fhir = {**live.headers, "Content-Type": "application/fhir+json"}
    created = httpx.post(f"{live.fhir_url}/Patient", json=rest_patient("R-1"), headers=fhir, timeout=30)
    pid = created.json()["id"]
    # searches by name, address and birth date work on the blinded index, and are audited blinded
    for params, expected in SEARCHES:
        found = httpx.get(f"{live.fhir_url}/Patient", params=params, headers=live.headers).json()
        assert found["total"] == expected, (params, found["total"])
    for purpose in (APPOINTMENT_REMINDER, POST_VISIT_CARE):
        consent = counter_consent(pid, purpose)
        assert httpx.post(f"{live.fhir_url}/Consent", json=consent, headers=fhir).status_code == 201
    dispatcher = live.runtime.crm.dispatcher
    wait_for(lambda: dispatcher.run_once() >= 0 and any(PHONE[1:] in str(e) for e in receiver.events()))
    pseudonym = next(e["subject"] for e in receiver.events() if e["type"] == "patient.upserted")

    # a paged search freezes its id list in search_snapshot
    page = httpx.get(f"{live.fhir_url}/Patient", params={"_count": 1}, headers=live.headers).json()
    assert any(link["relation"] == "next" for link in page["link"])
    with engine.connect() as conn:
        assert conn.execute(select(search_snapshot)).first() is not None

    # the CRM books; the HIS refuses with a text naming the patient
    slot = {"start": "2026-12-02T09:00:00+07:00", "end": "2026-12-02T09:30:00+07:00"}
    booked = crm.http.post(
        "/appointments", json={"subject": pseudonym, "slot": slot, "service": {"code": "X"}}
    )
    assert booked.status_code == 202, booked.text
    booking = live.runtime.crm.booking
    wait_for(lambda: booking.run_once() >= 0 and bool(peer.messages) and _his_answered(engine))

    officer = privacy(live, live.auth("privacy_officer"))
    mine = privacy(live, live.auth("patient", patient_id=pid))
    # access: the response document is the whole record (CCCD, BHYT, phone, e-mail)
    access = mine.post("/requests", json={"type": "access", "reason": f"Tôi là {NAME}, SĐT {PHONE}"}).json()
    assert officer.post(f"/requests/{access['id']}/process", json={}).status_code == 200
    # rectification filed at the desk, extended, processed and closed, every step with free text
    rect = officer.post(
        "/requests",
        json={
            "type": "rectification",
            "patient": f"Patient/{pid}",
            "reason": "Sai email lan.tran@example.vn",
            "identity_verification": "CCCD 001099012345 đối chiếu tại quầy số 3",
            "scope": {"field": "telecom", "note": f"SĐT đúng là {PHONE}"},
        },
    ).json()
    rid = rect["id"]
    assert officer.post(
        f"/requests/{rid}/extend", json={"days": 5, "reason": f"Chờ HIS sửa cho {NAME}"}
    ).is_success
    done = officer.post(f"/requests/{rid}/process", json={"resolution": f"Đã sửa SĐT {PHONE} trong HIS"})
    assert done.status_code == 200, done.text
    assert officer.post(f"/requests/{rid}/close", json={"reason": f"Đã báo {NAME} qua {PHONE}"}).is_success
    # erasure: the CRM confirms with a note naming the patient
    erasure = mine.post(
        "/requests",
        json={"type": "erasure", "reason": f"Xoá {PHONE}", "scope": {"crm": "all", "note": NAME}},
    ).json()
    assert officer.post(f"/requests/{erasure['id']}/process", json={}).json()["status"] == "in-progress"
    wait_for(
        lambda: dispatcher.run_once() >= 0 and any(e["type"] == "patient.erased" for e in receiver.events())
    )
    receipt = crm.http.post(
        f"{live.base_url}/privacy/v1/erasure-receipts", json={"subject": pseudonym, "note": f"Đã xoá {NAME}"}
    )
    assert receipt.status_code == 200, receipt.text

    assert in_clear(engine) == []
    assert leaks(engine, SECRETS) == []  # every column of every table (issue #18 item 5)
    cipher = live.runtime.store.cipher
    with engine.connect() as conn:
        hashes = [str(r[0]) for r in conn.execute(select(privacy_tombstone.c.subject_hash))]
    legacy = hashlib.sha256(f"carebridge-tombstone\x00{CCCD}|001099012345".encode()).hexdigest()
    assert hashes and all(h.startswith(f"{cipher.blind_kid}.") for h in hashes) and legacy not in hashes

    # the same values still read back, for staff and for the patient
    staff_view = officer.get(f"/requests/{rid}").json()
    assert staff_view["reason"] == "Sai email lan.tran@example.vn"
    assert staff_view["identity_verification"].startswith("CCCD 001099012345")
    assert staff_view["scope"]["note"] == f"SĐT đúng là {PHONE}"
    assert staff_view["close_reason"] == f"Đã báo {NAME} qua {PHONE}"
    export = mine.get(f"/requests/{access['id']}/response").json()
    assert "001099012345" in str(export)

    # rotation + rewrap move the side tables too; everything still reads back
    keys = ("--database-url", database_url, "--key-file", key_file)
    assert cli("store", "rotate-key", *keys)[0] == 0
    code, out, err = cli("store", "rewrap", *keys)
    assert code == 0, err
    assert "privacy_request.reason=" in out and "crm_his_outbox.last_error=" in out, out
    in_use = keys_in_use(engine, open_cipher(engine, key_file))  # a process started after the rotation
    side = {name: counts for name, counts in in_use.items() if "." in name}
    assert "privacy_request.response" in side and "privacy_receipt.note" in side, in_use
    assert all(set(counts) == {"c2"} for counts in in_use.values()), in_use
    assert officer.get(f"/requests/{rid}").json()["extension_reason"] == f"Chờ HIS sửa cho {NAME}"
    assert "001099012345" in str(mine.get(f"/requests/{access['id']}/response").json())
    assert in_clear(engine) == []
    assert leaks(engine, SECRETS) == []
    assert search(live, identifier=f"{CCCD}|079085001234")  # the store itself is untouched
    officer.close()
    mine.close()
    crm.http.close()


def _his_answered(engine: Engine) -> bool:
    with engine.connect() as conn:
        return conn.execute(select(crm_his_outbox.c.status)).scalar() == "rejected"


def test_legacy_plaintext_stays_readable_and_moved_values_are_refused(
    flow_live: tuple[LiveServer, HisPeer, str],
) -> None:
    live, _peer, _key_file = flow_live
    engine = live.runtime.engine
    fhir = {**live.headers, "Content-Type": "application/fhir+json"}
    pid = httpx.post(f"{live.fhir_url}/Patient", json=rest_patient("R-9"), headers=fhir).json()["id"]
    officer = privacy(live, live.auth("privacy_officer"))
    filed = [
        officer.post(
            "/requests",
            json={
                "type": kind,
                "patient": pid,
                "reason": f"lý do {kind}",
                "identity_verification": "CCCD ok",
            },
        ).json()["id"]
        for kind in ("access", "objection")
    ]
    # a row written before sealing existed: plaintext, still served as it is, sealed by rewrap
    with engine.begin() as conn:
        conn.execute(
            update(privacy_request)
            .where(privacy_request.c.id == filed[0])
            .values(reason="cũ, chưa niêm phong")
        )
    assert officer.get(f"/requests/{filed[0]}").json()["reason"] == "cũ, chưa niêm phong"
    report = rewrap(engine, live.runtime.store.cipher)
    assert report.rewritten["privacy_request.reason"] == 1
    with engine.connect() as conn:
        stored = {
            str(r[0]): str(r[1]) for r in conn.execute(select(privacy_request.c.id, privacy_request.c.reason))
        }
    assert all(v.startswith("cb1:") for v in stored.values())
    assert officer.get(f"/requests/{filed[0]}").json()["reason"] == "cũ, chưa niêm phong"
    # a sealed value copied onto another row does not open (associated data = table, column, row)
    with engine.begin() as conn:
        conn.execute(
            update(privacy_request).where(privacy_request.c.id == filed[1]).values(reason=stored[filed[0]])
        )
    refused = officer.get(f"/requests/{filed[1]}")
    assert refused.status_code == 500 and "lý do" not in refused.text
    officer.close()


def test_tombstones_written_before_keying_still_match(flow_live: tuple[LiveServer, HisPeer, str]) -> None:
    live, _peer, _key_file = flow_live
    cipher = live.runtime.store.cipher
    patient = {**rest_patient("R-7"), "id": "p-legacy"}
    legacy = hashlib.sha256(f"carebridge-tombstone\x00{CCCD}|001099012345".encode()).hexdigest()
    keyed = dict(subject_hashes(patient, cipher))
    assert legacy not in keyed and all(h.startswith(f"{cipher.blind_kid}.") for h in keyed)
    with live.runtime.engine.begin() as conn:
        conn.execute(
            privacy_tombstone.insert().values(
                request_id="old",
                subject_hash=legacy,
                kind="identifier",
                erased_us=1,
                scope="{}",
                legal_basis="x",
            )
        )
        assert tombstoned(conn, lookup_hashes(patient, cipher)) == {legacy}
