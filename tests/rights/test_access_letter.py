"""The access letter names every access and every CRM disclosure, readably (issue #18 item 8; both backends)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import orjson

from audit import search_audit
from consent.purposes import APPOINTMENT_REMINDER
from consent.rights.letter import NOT_RECORDED, PURPOSE_LABELS, ROLE_LABELS, build_letter, local_time
from gateway.ingest import Ingestor
from tests.crm_bridge.conftest import CRM_ID, PROJECTION, CrmClient, appointment, counter_consent
from tests.http.live import LiveServer
from tests.rights.conftest import create, privacy

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7v2"
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
RAW_INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}|\.\d{6}Z?\b")
LOCAL = re.compile(r"^\d{2}/\d{2}/\d{4} \d{2}:\d{2}$")
KNOWN_PURPOSES = {*PURPOSE_LABELS.values(), NOT_RECORDED}


def test_access_letter_lists_accesses_and_disclosures(rights_live: LiveServer, rights_crm: CrmClient) -> None:
    live = rights_live
    # the HIS registers the patient over HL7 (the real ingest path)
    outcome = Ingestor(live.runtime.store, live.runtime.settings).handle(
        (FIXTURES / "adt_a04_register_outpatient.hl7").read_bytes()
    )
    assert outcome.status == "processed", outcome
    his = httpx.Client(base_url=live.fhir_url, headers=live.headers, timeout=30)
    pid = his.get("/Patient").json()["entry"][0]["resource"]["id"]
    # consent, then an appointment the CRM receives (a disclosure)
    create(live, counter_consent(pid, APPOINTMENT_REMINDER))
    create(live, appointment(pid))
    assert [e["type"] for e in rights_crm.feed()][-1] == "appointment.booked"
    # two other clients of two roles read the record
    clinician = live.auth("clinician")
    assert (
        httpx.get(
            f"{live.fhir_url}/Patient/{pid}", headers={**clinician, "X-Purpose-Of-Use": "TREAT"}, timeout=30
        ).status_code
        == 200
    )
    mine = live.auth("patient", patient_id=pid)
    assert httpx.get(f"{live.fhir_url}/Patient/{pid}", headers=mine, timeout=30).status_code == 200

    with privacy(live, mine) as me, privacy(live, live.auth("privacy_officer")) as officer:
        filed = me.post("/requests", json={"type": "access", "reason": "ai đã xem hồ sơ của tôi"})
        assert filed.status_code == 201, filed.text
        rid = filed.json()["id"]
        assert officer.post(f"/requests/{rid}/process", json={}).status_code == 200
        document = me.get(f"/requests/{rid}/response").json()
        page = me.get(f"/requests/{rid}/response", params={"format": "html"})
    assert page.status_code == 200
    letter = document["letter"]
    accesses, disclosures = letter["truy_cap"], letter["chia_se_crm"]

    # every access: organisation, role (as a label), Vietnam local time, purpose as text
    live.runtime.audit.flush()
    with live.runtime.engine.connect() as conn:
        rows, _ = search_audit(conn, patient=pid, count=1000, newest_first=False)
    events = [orjson.loads(r) for r in rows]
    decisions = [e for e in events if any(c["code"] == "consent-decision" for c in e.get("subtype") or [])]
    filed_at = next(i for i, e in enumerate(events) if e["subtype"][0]["code"] == "privacy-filed")
    assert len(accesses) + len(disclosures) + letter["chia_se_bi_tu_choi"] > filed_at  # all up to filing
    for row in accesses:
        assert LOCAL.match(row["thoi_gian"]), row
        assert row["vai_tro"] in ROLE_LABELS.values(), row
        assert row["muc_dich"] in KNOWN_PURPOSES, row
    roles = {r["vai_tro"] for r in accesses}
    assert {ROLE_LABELS["clinician"], ROLE_LABELS["patient"], ROLE_LABELS["hl7-sender"]} <= roles
    assert ROLE_LABELS["his_integration"] in roles
    clinician_rows = [r for r in accesses if r["vai_tro"] == ROLE_LABELS["clinician"]]
    assert clinician_rows and clinician_rows[0]["hanh_dong"] == "Xem hồ sơ / Read"
    assert clinician_rows[0]["don_vi"].startswith("clinician-")
    assert clinician_rows[0]["muc_dich"] in ("Điều trị / Treatment", NOT_RECORDED)
    clinician_events = [
        e for e in events if any(a.get("altId") == clinician_rows[0]["don_vi"] for a in e.get("agent") or [])
    ]
    assert clinician_rows[0]["thoi_gian"] == local_time(clinician_events[0]["recorded"])
    filing = [r for r in accesses if r["hanh_dong"].endswith("nộp yêu cầu / filed")]  # the request itself
    assert filing and filing[0]["muc_dich"].startswith("Quản lý hành chính người bệnh")

    # every disclosure: which CRM, when, which purpose, which fields
    assert len(disclosures) == len([d for d in decisions if d["outcome"] == "0"]) >= 1
    for row in disclosures:
        assert row["crm"] == CRM_ID and LOCAL.match(row["thoi_gian"])
        assert row["muc_dich"] == "Nhắc lịch hẹn / Appointment reminders"
    booked = next(r for r in disclosures if r["du_lieu"] == "Lịch hẹn / Appointment")
    clients: dict[str, Any] = PROJECTION["clients"]
    assert booked["truong_du_lieu"] == ", ".join(sorted(clients[CRM_ID]["fields"]["appointment"]))

    # readable: no UUIDs, no raw UTC instants, in the JSON letter and in the HTML page
    text = json.dumps(letter, ensure_ascii=False)
    for where in (text, page.text):
        assert not UUID.search(where), UUID.search(where)
        assert not RAW_INSTANT.search(where), RAW_INSTANT.search(where)
    assert page.text.index("Ai đã truy cập") < page.text.index("Disclosure history")
    for row in (*clinician_rows, *disclosures):
        assert row["thoi_gian"] in page.text
    assert CRM_ID in page.text and "Nhắc lịch hẹn" in page.text and ROLE_LABELS["clinician"] in page.text


def test_letter_labels_purpose_person_and_missing_purpose() -> None:
    """Pure: a purposeOfUse coding becomes Vietnamese text; a person's name is shown; none -> not recorded."""
    agent = {
        "altId": "his-frontdesk",
        "role": [{"coding": [{"code": "clinician"}]}],
        "who": {"display": "BS. Trần Thị Bình"},
        "requestor": True,
        "purposeOfUse": [{"coding": [{"code": "HOPERAT"}]}],
    }
    with_purpose = {
        "recorded": "2026-11-30T17:05:09.123456Z",
        "subtype": [{"code": "read"}],
        "outcome": "0",
        "agent": [agent, {"who": {"display": "carebridge"}, "requestor": False}],
    }
    without = {**with_purpose, "agent": [{**agent, "purposeOfUse": None, "who": {}}]}
    letter = build_letter([with_purpose, without], "2026-12-01T08:00:00+07:00", None)
    first, second = letter["truy_cap"]
    assert first["thoi_gian"] == "01/12/2026 00:05"  # Vietnam time, the next day
    assert first["muc_dich"] == "Vận hành cơ sở y tế / Healthcare operations"
    assert first["nguoi_truy_cap"] == "BS. Trần Thị Bình"
    assert second["muc_dich"] == second["nguoi_truy_cap"] == NOT_RECORDED
    assert PURPOSE_LABELS["TREAT"].startswith("Điều trị")
    assert letter["lap_luc"] == "01/12/2026 08:00"


def test_every_purpose_a_role_may_state_has_a_patient_readable_label() -> None:
    from consent.rights.letter import PURPOSE_LABELS
    from gateway.auth.purpose import CODES

    assert sorted(set(CODES) - set(PURPOSE_LABELS)) == []
