"""A duplicate registration over MLLP (issue #15 item 4): applied, tagged, held back from the CRM, merged.

A HIS registers Lê Thị Thu twice (two record numbers, one CCCD).  The second
ADT^A04 is answered AA and its visit stored; both Patients carry the
possible-duplicate tag (searchable over FHIR) and the CRM hears nothing about
either until the HIS merges them with ADT^A39/A40 (HL7 v2.5.1 ch. 3.3.40).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from common import PATIENT_STATUS_SYSTEM, is_possible_duplicate, mrn_system, visit_system
from consent.purposes import APPOINTMENT_REMINDER, POST_VISIT_CARE
from fhir_store.model import Create, RequestContext
from fhir_store.writer import find_identifier_owner
from gateway.ingest import Ingestor
from gateway.mllp.client import MllpClient
from gateway.mllp.server import MllpServer
from gateway.runtime import Runtime
from tests.crm_bridge.conftest import CRM_ID, CrmClient, counter_consent, his
from tests.http.live import LiveServer

CCCD = "079190008888"  # 12 digits: province 079 (TP.HCM), century/sex 1 (female, 1900s), year 90
MSH = "MSH|^~\\&|HIS_VN|BVDK_HN|FHIRGATE|CRM_CSKH|{ts}+0700||{type}|{ctl}|P|2.5.1|||||VNM|UNICODE UTF-8"
PID = (
    "PID|1||{mrn}^^^BVDK_HN^MR~"
    + CCCD
    + "^^^BCA^NI||Lê^Thu^Thị^^^^L||19900704|F|||45 Nguyễn Trãi^^Phường Thanh Xuân^Hà Nội^100000^VNM^H||0903111222^PRN^CP"
)
PV1 = (
    "PV1|1|O|KHAM^P101^01^BVDK_HN||||BS001^Trần^Bình^Thị^^^BS|||NHA|||||||||{visit}"
    "|||||||||||||||||||||||||{ts}+0700"
)


def adt(trigger: str, ctl: str, ts: str, mrn: str, visit: str, structure: str = "ADT_A01") -> bytes:
    segments = [
        MSH.format(ts=ts, type=f"ADT^{trigger}^{structure}", ctl=ctl),
        f"EVN|{trigger}|{ts}+0700",
        PID.format(mrn=mrn),
        PV1.format(visit=visit, ts=ts),
    ]
    return "\r".join(segments).encode() + b"\r"


def a40(ctl: str, ts: str, survivor: str, retired: str) -> bytes:
    segments = [
        MSH.format(ts=ts, type="ADT^A40^ADT_A39", ctl=ctl),
        f"EVN|A40|{ts}+0700",
        PID.format(mrn=survivor),
        f"MRG|{retired}^^^BVDK_HN^MR",
    ]
    return "\r".join(segments).encode() + b"\r"


@contextmanager
def mllp_on(runtime: Runtime) -> Iterator[int]:
    """The real MLLP listener on the live server's runtime (same store, same CRM hook)."""
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    server = MllpServer(runtime, "127.0.0.1", 0, ingestor=Ingestor(runtime.store, runtime.settings))
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(30)
    try:
        yield server.port
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)


def _owner(live: LiveServer, resource_type: str, system: str, value: str) -> dict[str, Any]:
    store = live.runtime.store
    with live.runtime.engine.connect() as conn:
        found = find_identifier_owner(conn, resource_type, system, store.cipher.blind(value))
    assert found is not None, value
    return store.read(resource_type, found).resource()


def test_duplicate_registration_is_applied_tagged_held_back_and_merged(
    crm_live: LiveServer, crm: CrmClient
) -> None:
    store, mrn = crm_live.runtime.store, mrn_system("BVDK_HN")
    setup = RequestContext("req-consent", client_id="front-desk")
    with mllp_on(crm_live.runtime) as port, MllpClient("127.0.0.1", port) as client:
        first = client.exchange(adt("A04", "DUP0001", "20261124081500", "BN300001", "V300001"))
        assert first is not None and (first.code, first.text) == ("AA", "")
        thu = _owner(crm_live, "Patient", mrn, "BN300001")
        for purpose in (APPOINTMENT_REMINDER, POST_VISIT_CARE):
            store.transact([Create(counter_consent(thu["id"], purpose))], setup)
        told = [e["type"] for e in crm.feed()]
        assert "patient.upserted" in told  # the CRM knows the first registration
        cursor = max(e["seq"] for e in crm.feed())

        second = client.exchange(adt("A04", "DUP0002", "20261124093000", "BN300002", "V300002"))
        assert second is not None and (second.code, second.text) == ("AA", "")
        assert b"ERR" not in second.raw
        thu, dup = _owner(crm_live, "Patient", mrn, "BN300001"), _owner(crm_live, "Patient", mrn, "BN300002")
        assert dup["id"] != thu["id"] and is_possible_duplicate(thu) and is_possible_duplicate(dup)
        visit = _owner(crm_live, "Encounter", visit_system("BVDK_HN"), "V300002")
        assert visit["subject"] == {"reference": f"Patient/{dup['id']}"}
        with his(crm_live) as http:
            page = http.get("/Patient", params={"_tag": f"{PATIENT_STATUS_SYSTEM}|possible-duplicate"})
            assert page.status_code == 200
            assert {e["resource"]["id"] for e in page.json().get("entry", [])} == {thu["id"], dup["id"]}
            # REST still refuses a new patient with the same CCCD, without naming who holds it
            body = {
                **{k: v for k, v in dup.items() if k not in ("id", "meta")},
                "identifier": dup["identifier"],
            }
            body["identifier"] = [{"system": mrn, "value": "BN300009"}, dup["identifier"][1]]
            refused = http.post("/Patient", json=body)
            assert refused.status_code == 409
            assert thu["id"] not in refused.text and dup["id"] not in refused.text

        # while tagged: consent for the second record, a discharge of the first visit -- no event
        store.transact([Create(counter_consent(dup["id"], POST_VISIT_CARE))], setup)
        discharge = client.exchange(adt("A03", "DUP0003", "20261124101500", "BN300001", "V300001"))
        assert discharge is not None and discharge.code == "AA"
        assert _owner(crm_live, "Encounter", visit_system("BVDK_HN"), "V300001")["status"] == "finished"
        assert crm.feed(cursor) == []

        # an identifier conflict that remains an error: the ERR text names no other patient
        clash = "\r".join(
            [
                MSH.format(ts="20261124110000", type="ADT^A04^ADT_A01", ctl="DUP0004"),
                "EVN|A04|20261124110000+0700",
                "PID|1||BN300003^^^BVDK_HN^MR~BN300001^^^BVDK_HN^MR||Phạm^Minh^Văn^^^^L||19880101|M",
            ]
        ).encode()
        refused_ack = client.exchange(clash + b"\r")
        assert refused_ack is not None and refused_ack.code == "AE" and b"205" in refused_ack.raw
        assert thu["id"].encode() not in refused_ack.raw and dup["id"].encode() not in refused_ack.raw

        merged = client.exchange(a40("DUP0005", "20261125090000", "BN300001", "BN300002"))
        assert merged is not None and (merged.code, merged.text) == ("AA", "")
        thu, dup = _owner(crm_live, "Patient", mrn, "BN300001"), _owner(crm_live, "Patient", mrn, "BN300002")
        assert not is_possible_duplicate(thu) and not is_possible_duplicate(dup) and dup["active"] is False
        visit = _owner(crm_live, "Encounter", visit_system("BVDK_HN"), "V300002")
        assert visit["subject"] == {"reference": f"Patient/{thu['id']}"}  # the survivor keeps the visit

        # resolved: the survivor's next event reaches the CRM again
        done = client.exchange(adt("A03", "DUP0006", "20261125100000", "BN300001", "V300002"))
        assert done is not None and done.code == "AA"
    events = crm.feed(cursor)
    completed = [e for e in events if e["type"] == "encounter.completed"]
    assert [e["subject"] for e in completed] == [crm_live.runtime.crm.keys.pseudonym(CRM_ID, thu["id"])]
