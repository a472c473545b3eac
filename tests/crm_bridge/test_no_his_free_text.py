"""Issue #18 item 4: free text from the HIS never reaches the CRM.

Identifiers of another person (CCCD, BHYT, phone, name) are planted in every HIS-originated text
field carebridge receives — NTE segments, EVN-4 and PV2-3 reasons, SCH-6/SCH-7 reasons, DG1 text,
and the HIS's answer to a CRM booking (MSA-3, ERR-3 text, ERR-8) — and every CRM payload is
scanned: each webhook body a real local receiver got, and every feed page.  Both backends.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from consent.purposes import APPOINTMENT_REMINDER, POST_VISIT_CARE
from crm_bridge.rejection import err3_code, rejection_reason
from gateway.ingest import Ingestor
from tests.crm_bridge.conftest import CrmClient, Receiver, counter_consent, his, serve_crm, wait_for
from tests.crm_bridge.test_booking import HisPeer

LEAK_NAME, LEAK_CCCD, LEAK_BHYT, LEAK_PHONE = (
    "Phạm Thị Hồng Nhung",
    "001199004455",
    "GD4797900011122",
    "0908111222",
)
LEAKS = [LEAK_NAME, LEAK_CCCD, LEAK_BHYT, LEAK_PHONE, "+84908111222", "Hồng Nhung", "Bác sĩ vắng"]
TEXT = f"{LEAK_NAME} CCCD {LEAK_CCCD} BHYT {LEAK_BHYT} SĐT {LEAK_PHONE}"
MSH = "MSH|^~\\&|HIS_VN|BVDK_HN|FHIRGATE|CRM_CSKH|{when}||{kind}|{control}|P|2.5.1|||AL|NE|VNM|UNICODE UTF-8"
PID = (
    "PID|1||BN004242^^^BVDK_HN^MR~079085004242^^^BCA^NI||Nguyễn^An^Văn^^^^L||19850312|M|||||0912345678^PRN^CP"
)
PV1 = "PV1|1|O|KHAM^P101^01^BVDK_HN||||BS001^Trần^Bình^Thị^^^BS|||NHA|||||||||V2026120300042"

A04 = "\r".join(
    [
        MSH.format(when="20261203080000+0700", kind="ADT^A04^ADT_A01", control="LEAK0001"),
        f"EVN|A04|20261203080000+0700||REG^{TEXT}^LOCAL",
        PID,
        f"NTE|1||Người nhà: {TEXT}",
        PV1 + "|||||||||||||||||||||||||20261203080000+0700",
        f"PV2|||KHAM^Khám theo yêu cầu của {TEXT}^LOCAL",
        f"NTE|2||{TEXT}",
    ]
).encode()
S12 = "\r".join(
    [
        MSH.format(when="20261203081000+0700", kind="SIU^S12^SIU_S12", control="LEAK0002"),
        f"SCH|LH004242^BVDK_HN|LH004242^BVDK_HN|||||TAIKHAM^Hẹn vì {TEXT}^LOCAL|ROUTINE^{TEXT}^HL70276|30|MIN"
        "|^^30^20261210090000+0700^20261210093000+0700|||||TN03^Hồ^Mai||||TN03^Hồ^Mai|||||Booked",
        f"NTE|1||Gọi {TEXT} trước khi khám",
        PID,
        "RGS|1|A",
        "AIS|1|A|NIENG^Niềng răng - tái khám^LOCAL|20261210090000+0700|||30|MIN",
        f"NTE|2||{TEXT}",
    ]
).encode()
A03 = "\r".join(
    [
        MSH.format(when="20261203101500+0700", kind="ADT^A03^ADT_A03", control="LEAK0003"),
        f"EVN|A03|20261203101500+0700||DIS^{TEXT}^LOCAL",
        PID,
        PV1 + "|||||||||||||||||01||||||||20261203080000+0700|20261203101500+0700",
        f"DG1|1||K02.1^Sâu răng {TEXT}^ICD10||20261203|F",
        f"NTE|1||{TEXT}",
    ]
).encode()
ERR = f"ERR||SCH^1^7|204^Không tìm thấy {TEXT}^HL70357|E||||Bác sĩ vắng; {TEXT}"


def _clean(payload: bytes) -> None:
    text = payload.decode()
    for leak in LEAKS:
        assert leak not in text, "HIS free text reached the CRM"


def test_the_crm_gets_codes_not_his_text(database_url: str, tmp_path: Path) -> None:
    peer = HisPeer("AE", msa_text=f"Từ chối: {TEXT}", err=ERR)
    receiver = Receiver()
    receiver.start()
    try:
        with serve_crm(
            database_url, tmp_path, crm_his_mllp=f"127.0.0.1:{peer.port}", mllp_open="true"
        ) as live:
            crm = CrmClient(live)
            created = crm.http.post("/subscriptions", json={"url": receiver.url})
            assert created.status_code == 201, created.text
            ingestor = Ingestor(live.runtime.store, live.runtime.settings)
            assert ingestor.handle(A04).ack_code == "AA"
            with his(live) as http:
                found = http.get("/Patient", params={"identifier": "BN004242"}).json()["entry"]
                pid = found[0]["resource"]["id"]
                for purpose in (APPOINTMENT_REMINDER, POST_VISIT_CARE):
                    assert http.post("/Consent", json=counter_consent(pid, purpose)).status_code == 201
            assert ingestor.handle(S12).ack_code == "AA"
            assert ingestor.handle(A03).ack_code == "AA"
            pseudonym = crm.feed()[0]["subject"]

            # a booking the HIS refuses with its texts full of another person's identifiers
            body = {
                "subject": pseudonym,
                "slot": {"start": "2026-12-12T09:00:00+07:00", "end": "2026-12-12T09:30:00+07:00"},
                "service": {"code": "NIENG"},
            }
            assert crm.http.post("/appointments", json=body).status_code == 202
            booking = live.runtime.crm.booking
            booking.start()
            try:
                wait_for(lambda: any(e["type"] == "appointment.rejected" for e in crm.feed()))
            finally:
                booking.stop()
            live.runtime.crm.dispatcher.run_once()

            pages, cursor = [], 0
            while True:
                page = crm.http.get("/changes", params={"cursor": cursor, "limit": 2})
                pages.append(page.content)
                cursor, more = page.json()["next_cursor"], page.json()["has_more"]
                if not more:
                    break
            events = [e for p in pages for e in httpx.Response(200, content=p).json()["events"]]
            types = [e["type"] for e in events]
            for kind in (
                "patient.upserted",
                "appointment.booked",
                "encounter.completed",
                "appointment.rejected",
            ):
                assert kind in types, types
            rejected = next(e for e in events if e["type"] == "appointment.rejected")
            assert rejected["data"]["reason"] == {
                "category": "unknown-patient-or-record",
                "hl7_error_code": "204",
            }
            assert rejected["data"]["ack_code"] == "AE"
            wait_for(lambda: len(receiver.received) >= len(events))
            assert len(receiver.received) >= len(events) > 0
            for payload in [*pages, *(b for _h, b in receiver.received)]:
                _clean(payload)
            crm.http.close()
    finally:
        receiver.stop()
        peer.close()


def test_rejection_categories_are_carebridges_own_words() -> None:
    assert err3_code(b"MSH|^~\\&|H\rMSA|AE|1\rERR||PID^1|207^boom " + LEAK_CCCD.encode() + b"|E") == "207"
    assert err3_code(b"MSA|AR|1|" + LEAK_NAME.encode()) is None
    assert err3_code(b"ERR|||" + LEAK_CCCD.encode() + b"^x|E") is None  # not a table 0357 code
    assert rejection_reason("AE", "206") == {"category": "record-locked", "hl7_error_code": "206"}
    assert rejection_reason("AR", None) == {"category": "refused", "hl7_error_code": None}
    assert rejection_reason("AE", "999") == {"category": "his-error", "hl7_error_code": "999"}
