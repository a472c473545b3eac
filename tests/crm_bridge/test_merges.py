"""Merges over MLLP end to end (issue #15 item 5): both pairs, retired numbers, links, the CRM, unlink.

The HIS registered Lê Thị Thu three times (BN500001..3).  One ADT^A40 with two
PID/MRG groups (HL7 v2.5.1 ch. 3.3.40, structure ADT_A39, the group repeats)
retires BN500002 and BN500003 into BN500001.  Later messages still quote a
retired number or restate the survivor; the CRM, which knew all three under
consent, hears ``patient.merged`` for each pair.  ADT^A37 (ch. 3.3.37, structure
ADT_A37: two PID segments) unlinks a pair again.
"""

from __future__ import annotations

from typing import Any

from common import mrn_system, visit_system
from consent.purposes import APPOINTMENT_REMINDER
from fhir_store.model import Create, RequestContext
from gateway.mllp.client import MllpClient
from tests.crm_bridge.conftest import CRM_ID, CrmClient, counter_consent
from tests.crm_bridge.test_possible_duplicates import MSH, PV1, _owner, mllp_on
from tests.http.live import LiveServer

PID = (
    "PID|1||{mrn}^^^BVDK_HN^MR||Lê^Thu^Thị^^^^L||19900704|F|||"
    "45 Nguyễn Trãi^^Phường Thanh Xuân^Hà Nội^100000^VNM^H||{phone}^PRN^CP"
)


def _pid(mrn: str, phone: str = "0903111222") -> str:
    return PID.format(mrn=mrn, phone=phone)


def adt(trigger: str, ctl: str, ts: str, mrn: str, visit: str) -> bytes:
    """A registration without CCCD (the front desk did not see it): nothing marks it a duplicate."""
    segments = [
        MSH.format(ts=ts, type=f"ADT^{trigger}^ADT_A01", ctl=ctl),
        f"EVN|{trigger}|{ts}+0700",
        _pid(mrn),
        PV1.format(visit=visit, ts=ts),
    ]
    return "\r".join(segments).encode() + b"\r"


def a40(ctl: str, ts: str, pairs: list[tuple[str, str]]) -> bytes:
    """ADT^A40 with one PID/MRG group per (survivor, retired) pair."""
    segments = [MSH.format(ts=ts, type="ADT^A40^ADT_A39", ctl=ctl), f"EVN|A40|{ts}+0700"]
    for survivor, retired in pairs:
        segments += [_pid(survivor), f"MRG|{retired}^^^BVDK_HN^MR"]
    return "\r".join(segments).encode() + b"\r"


def a08(ctl: str, ts: str, mrn: str, phone: str) -> bytes:
    segments = [
        MSH.format(ts=ts, type="ADT^A08^ADT_A01", ctl=ctl),
        f"EVN|A08|{ts}+0700",
        _pid(mrn, phone),
        "PV1|1|O|KHAM^P101^01^BVDK_HN",
    ]
    return "\r".join(segments).encode() + b"\r"


def a37(ctl: str, ts: str, first: str, second: str) -> bytes:
    segments = [
        MSH.format(ts=ts, type="ADT^A37^ADT_A37", ctl=ctl),
        f"EVN|A37|{ts}+0700",
        _pid(first),
        _pid(second).replace("PID|1|", "PID|2|", 1),
    ]
    return "\r".join(segments).encode() + b"\r"


def _links(resource: dict[str, Any]) -> set[tuple[str, str]]:
    return {(lk["type"], lk["other"]["reference"]) for lk in resource.get("link", [])}


def _ok(client: MllpClient, message: bytes) -> None:
    ack = client.exchange(message)
    assert ack is not None and (ack.code, ack.text) == ("AA", ""), ack


def test_merge_of_two_pairs_retired_numbers_links_crm_event_and_unlink(
    crm_live: LiveServer, crm: CrmClient
) -> None:
    store, mrn = crm_live.runtime.store, mrn_system("BVDK_HN")
    keys = crm_live.runtime.crm.keys
    setup = RequestContext("req-consent", client_id="front-desk")
    with mllp_on(crm_live.runtime) as port, MllpClient("127.0.0.1", port) as client:
        _ok(client, adt("A04", "MRG0001", "20261124081500", "BN500001", "V500001"))
        _ok(client, adt("A04", "MRG0002", "20261124091500", "BN500002", "V500002"))
        _ok(client, adt("A04", "MRG0003", "20261124101500", "BN500003", "V500003"))
        thu, second, third = (
            _owner(crm_live, "Patient", mrn, m) for m in ("BN500001", "BN500002", "BN500003")
        )
        for consented in (thu, second):  # BN500003 never consented: the CRM does not know it
            store.transact([Create(counter_consent(consented["id"], APPOINTMENT_REMINDER))], setup)
        cursor = max(e["seq"] for e in crm.feed())

        _ok(client, a40("MRG0004", "20261125090000", [("BN500001", "BN500002"), ("BN500001", "BN500003")]))
        survivor = _owner(crm_live, "Patient", mrn, "BN500001")
        ref = f"Patient/{thu['id']}"
        assert _links(survivor) == {
            ("replaces", f"Patient/{second['id']}"),
            ("replaces", f"Patient/{third['id']}"),
        }
        for retired in ("BN500002", "BN500003"):
            merged = _owner(crm_live, "Patient", mrn, retired)
            assert merged["active"] is False and _links(merged) == {("replaced-by", ref)}
            visit = _owner(crm_live, "Encounter", visit_system("BVDK_HN"), retired.replace("BN", "V"))
            assert visit["subject"] == {"reference": ref}

        merged_events = [e for e in crm.feed(cursor) if e["type"] == "patient.merged"]
        new = keys.pseudonym(CRM_ID, thu["id"])
        assert [(e["subject"], e["data"]) for e in merged_events] == [
            (new, {"old": keys.pseudonym(CRM_ID, second["id"]), "new": new})
        ]  # nothing for the unconsented third record

        # an A08 for a retired number updates the survivor; the merged record is not revived
        _ok(client, a08("MRG0005", "20261125100000", "BN500002", "0987654321"))
        survivor = _owner(crm_live, "Patient", mrn, "BN500001")
        merged = _owner(crm_live, "Patient", mrn, "BN500002")
        assert survivor["telecom"][0]["value"] == "+84987654321"
        assert merged["active"] is False and _links(merged) == {("replaced-by", ref)}
        assert {i["value"] for i in survivor["identifier"]} == {"BN500001"}

        # an A04 restating the survivor keeps its `replaces` links
        _ok(client, adt("A04", "MRG0006", "20261125110000", "BN500001", "V500004"))
        assert len(_links(_owner(crm_live, "Patient", mrn, "BN500001"))) == 2

        # A37 unlinks BN500003 again: its links are gone and it is active
        _ok(client, a37("MRG0007", "20261125120000", "BN500001", "BN500003"))
        survivor = _owner(crm_live, "Patient", mrn, "BN500001")
        unlinked = _owner(crm_live, "Patient", mrn, "BN500003")
        assert _links(survivor) == {("replaces", f"Patient/{second['id']}")}
        assert unlinked["active"] is True and "link" not in unlinked


def test_no_merge_event_for_patients_who_never_consented(crm_live: LiveServer, crm: CrmClient) -> None:
    mrn = mrn_system("BVDK_HN")
    with mllp_on(crm_live.runtime) as port, MllpClient("127.0.0.1", port) as client:
        _ok(client, adt("A04", "MRG0101", "20261124081500", "BN510001", "V510001"))
        _ok(client, adt("A04", "MRG0102", "20261124091500", "BN510002", "V510002"))
        _ok(client, a40("MRG0103", "20261125090000", [("BN510001", "BN510002")]))
        assert _owner(crm_live, "Patient", mrn, "BN510002")["active"] is False
    assert [e for e in crm.feed() if e["type"] == "patient.merged"] == []
