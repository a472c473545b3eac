"""Erasure follows Patient.link to every merged record (issue #18 item 7), both backends.

The HIS registered one person twice (BN700001, BN700002); both were disclosed to
the CRM under consent; ADT^A40 merged the second into the first.  The patient asks
for erasure of the surviving record.  Afterwards the HIS restates the merged
duplicate with a new phone (REST update) and a front desk records a consent for it:
neither the duplicate's name nor its phone reaches the CRM again, by webhook or
feed, and the duplicate's record is held and restricted like the survivor's.
"""

from __future__ import annotations

import httpx
from sqlalchemy import select

from consent.purposes import APPOINTMENT_REMINDER
from consent.rights.tombstones import read_file, subject_hashes
from crm_bridge.schema import crm_pseudonym
from gateway.ingest import Ingestor
from tests.crm_bridge.conftest import CrmClient, Receiver, counter_consent, recent, wait_for
from tests.crm_bridge.test_merges import a40, adt
from tests.http.live import LiveServer
from tests.rights.conftest import create, erase

NEW_PHONE = "+84977111222"


def _ingest(live: LiveServer, raw: bytes) -> None:
    outcome = Ingestor(live.runtime.store, live.runtime.settings).handle(raw)
    assert outcome.status == "processed", outcome


def _patient_id(his: httpx.Client, mrn: str) -> str:
    found = his.get("/Patient", params={"identifier": f"https://id.carebridge.vn/mrn/BVDK_HN|{mrn}"}).json()
    return str(found["entry"][0]["resource"]["id"])


def test_erasure_reaches_the_merged_duplicate(
    rights_live: LiveServer, rights_crm: CrmClient, receiver: Receiver
) -> None:
    live = rights_live
    assert rights_crm.http.post("/subscriptions", json={"url": receiver.url}).status_code == 201
    _ingest(live, adt("A04", "ERM-1", "20261120080000", "BN700001", "V700001"))
    _ingest(live, adt("A04", "ERM-2", "20261120081000", "BN700002", "V700002"))
    his = httpx.Client(base_url=live.fhir_url, headers=live.headers, timeout=30)
    survivor, duplicate = _patient_id(his, "BN700001"), _patient_id(his, "BN700002")
    for pid in (survivor, duplicate):
        create(live, counter_consent(pid, APPOINTMENT_REMINDER))
    dispatcher = live.runtime.crm.dispatcher
    wait_for(lambda: dispatcher.run_once() >= 0 and len(receiver.events()) >= 2)
    _ingest(live, a40("ERM-3", "20261120090000", [("BN700001", "BN700002")]))
    links = {lk["type"] for lk in his.get(f"/Patient/{duplicate}").json().get("link", [])}
    assert "replaced-by" in links

    erase(live, survivor)
    dispatcher.run_once()
    feed_after_erasure = rights_crm.feed()
    received = len(receiver.received)

    # the duplicate is held and restricted; its CRM links are gone; the tombstone names it too
    clinician = httpx.Client(base_url=live.fhir_url, headers=live.auth("clinician"), timeout=30)
    record = clinician.get(f"/Patient/{duplicate}").json()
    assert any(s["code"] == "R" for s in record["meta"]["security"])
    with live.runtime.engine.connect() as conn:
        assert (
            conn.execute(select(crm_pseudonym).where(crm_pseudonym.c.patient_id == duplicate)).first() is None
        )
    tombstoned = {t["subject_hash"] for t in read_file(live.runtime.settings.privacy.tombstone_path)}
    assert {h for h, _ in subject_hashes(record, live.runtime.store.cipher)} <= tombstoned

    # a HIS update of the duplicate and a new consent for it: nothing reaches the CRM
    current = his.get(f"/Patient/{duplicate}").json()
    current["telecom"] = [{"system": "phone", "value": NEW_PHONE, "use": "mobile"}]
    updated = his.put(
        f"/Patient/{duplicate}", json=current, headers={"Content-Type": "application/fhir+json"}
    )
    assert updated.status_code == 200, updated.text
    create(live, counter_consent(duplicate, APPOINTMENT_REMINDER, date_time=recent(1)))
    dispatcher.run_once()
    assert len(receiver.received) == received
    feed = rights_crm.feed()
    assert feed == feed_after_erasure
    everything = b"".join(body for _, body in receiver.received) + b"".join(str(e).encode() for e in feed)
    assert NEW_PHONE.encode() not in everything and NEW_PHONE[3:].encode() not in everything
    assert "Lê".encode() not in b"".join(str(e).encode() for e in feed)
