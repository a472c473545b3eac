"""End to end (both backends, real HTTP, real tokens, a real webhook receiver).

HIS ADT → CRM receives the patient → the patient files an erasure → the CRM
receives ``patient.erased`` and confirms → the clinical record is still
readable by a clinician, labelled restricted, and never disclosed to the CRM
again, even after a new ADT → the audit trail shows every step → the response
document lists what was erased and what is retained (Law 91/2025 Art. 14).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from audit.schema import audit_event
from consent.purposes import APPOINTMENT_REMINDER, POST_VISIT_CARE
from consent.rights.tombstones import read_file
from crm_bridge.schema import crm_pseudonym
from gateway.ingest import Ingestor
from gateway.ingest_group import process_group
from tests.crm_bridge.conftest import CRM_ID, CrmClient, Receiver, counter_consent, wait_for
from tests.http.live import LiveServer
from tests.rights.conftest import create, privacy
from tests.test_ingest import a04

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7v2"


def _ingest(live: LiveServer, name: str, control_id: str | None = None) -> None:
    raw = (FIXTURES / name).read_bytes()
    if control_id is not None:
        raw = raw.replace(b"|HIS000001|", f"|{control_id}|".encode()).replace(
            b"|HIS000003|", f"|{control_id}|".encode()
        )
    outcome = Ingestor(live.runtime.store, live.runtime.settings).handle(raw)
    assert outcome.status == "processed", outcome


def _subtypes(live: LiveServer) -> list[str]:
    live.runtime.audit.flush()
    with live.runtime.engine.connect() as conn:
        rows = conn.execute(select(audit_event.c.content).order_by(audit_event.c.seq)).all()
    out = []
    for (content,) in rows:
        event = json.loads(content)
        out += [c["code"] for c in event.get("subtype") or []]
    return out


@pytest.mark.slow
def test_erasure_end_to_end(
    rights_live: LiveServer, rights_crm: CrmClient, receiver: Receiver, tmp_path: Path
) -> None:
    live = rights_live
    assert rights_crm.http.post("/subscriptions", json={"url": receiver.url}).status_code == 201
    # 1. the HIS registers the patient (ADT^A04 through the real ingest path); the patient consents
    _ingest(live, "adt_a04_register_outpatient.hl7")
    his = httpx.Client(base_url=live.fhir_url, headers=live.headers, timeout=30)
    patients = his.get("/Patient").json()["entry"]
    assert len(patients) == 1
    pid = patients[0]["resource"]["id"]
    for purpose in (APPOINTMENT_REMINDER, POST_VISIT_CARE):
        create(live, counter_consent(pid, purpose))
    _ingest(live, "adt_a03_discharge_service_completed.hl7")
    # 2. the CRM received the patient
    dispatcher = live.runtime.crm.dispatcher
    wait_for(
        lambda: dispatcher.run_once() >= 0 and any(e["type"] == "patient.upserted" for e in receiver.events())
    )
    subject = next(e["subject"] for e in receiver.events() if e["type"] == "patient.upserted")

    # 3. the patient files an erasure with their own token; a privacy officer processes it
    with privacy(live, live.auth("patient", patient_id=pid)) as mine:
        filed = mine.post("/requests", json={"type": "erasure", "reason": "Tôi không dùng dịch vụ nữa"})
        assert filed.status_code == 201, filed.text
        request_id = filed.json()["id"]
        assert filed.json()["clocks"]["processor_involved"] is True
    with privacy(live, live.auth("privacy_officer")) as officer:
        assert officer.post(f"/requests/{request_id}/acknowledge").status_code == 200
        done = officer.post(f"/requests/{request_id}/process", json={})
        assert done.status_code == 200, done.text
        assert done.json()["status"] == "in-progress"  # waiting for the CRM's deletion receipt

    # 4. the CRM gets patient.erased and confirms the deletion
    wait_for(
        lambda: dispatcher.run_once() >= 0 and any(e["type"] == "patient.erased" for e in receiver.events())
    )
    erased = next(e for e in receiver.events() if e["type"] == "patient.erased")
    assert erased["subject"] == subject and subject in erased["data"]["pseudonyms"]
    receipt = rights_crm.http.post(
        f"{live.base_url}/privacy/v1/erasure-receipts", json={"subject": subject, "note": "deleted"}
    )
    assert receipt.status_code == 200, receipt.text
    assert receipt.json()["status"] == "completed"
    with live.runtime.engine.connect() as conn:
        assert conn.execute(select(crm_pseudonym).where(crm_pseudonym.c.patient_id == pid)).first() is None
    # the pseudonym no longer resolves (mapping destroyed)
    officer_headers = live.auth("privacy_officer")
    reid = httpx.post(
        f"{live.base_url}/crm/v1/reidentify",
        json={"crm": CRM_ID, "pseudonym": subject, "reason": "checking the erasure worked"},
        headers=officer_headers,
    )
    assert reid.status_code == 404

    # 5. the clinical record is retained, restricted, readable by a clinician
    clinician = httpx.Client(base_url=live.fhir_url, headers=live.auth("clinician"), timeout=30)
    record = clinician.get(f"/Patient/{pid}")
    assert record.status_code == 200
    assert {"code": "R"}.items() <= record.json()["meta"]["security"][0].items()
    encounters = clinician.get("/Encounter", params={"patient": pid}).json()["entry"]
    assert encounters and all(
        any(s["code"] == "R" for s in e["resource"]["meta"]["security"]) for e in encounters
    )

    # 6. a new ADT for that patient updates the record but never reaches the CRM; it arrives
    #    together with another patient's message, so it is applied in one group commit
    seen = len(receiver.received)
    feed_before = rights_crm.feed()
    ingestor = Ingestor(live.runtime.store, live.runtime.settings)
    group = [(FIXTURES / "adt_a08_update_patient.hl7").read_bytes(), a04("GROUP-OTHER-1", "GROUP-OTHER")]
    outcomes = process_group(ingestor, [(ingestor.prepare(raw), None) for raw in group])
    assert [o.status for o in outcomes] == ["processed", "processed"]
    live.runtime.crm.dispatcher.run_once()
    assert len(receiver.received) == seen
    assert rights_crm.feed() == feed_before
    again = clinician.get(f"/Patient/{pid}").json()
    assert "Trần Hưng Đạo" in json.dumps(again, ensure_ascii=False)  # the A08 was applied
    assert any(s["code"] == "R" for s in again["meta"]["security"])  # and the hold label re-applied

    # 7. the FHIR Task is visible to staff
    tasks = httpx.get(f"{live.fhir_url}/Task", params={"patient": pid}, headers=officer_headers).json()
    assert tasks["entry"][0]["resource"]["status"] == "completed"

    # 8. every step is audited
    subtypes = _subtypes(live)
    for step in (
        "privacy-filed",
        "privacy-acknowledged",
        "privacy-erasure-applied",
        "privacy-processed-erasure",
        "privacy-processor-receipt",
        "erasure-hold-relabel",
    ):
        assert step in subtypes, step

    # 9. the response document lists erased and retained data, with the legal basis
    with privacy(live, live.auth("patient", patient_id=pid)) as mine:
        document = mine.get(f"/requests/{request_id}/response").json()
        page = mine.get(f"/requests/{request_id}/response", params={"format": "html"})
    assert any("CRM copy" in e["what"] for e in document["erased"])
    assert any(r["what"].startswith("Patient") for r in document["retained"])
    assert any("Circular 33/2025" in b for b in document["legal_basis"])
    assert document["processors"][0]["confirmed_at"] is not None
    assert page.status_code == 200 and "Retained" in page.text and "<script" not in page.text
    # the tombstone holds hashes only, also outside the database
    tombstones = read_file(tmp_path / "tombstones.jsonl")
    assert tombstones and all(pid not in json.dumps(t) for t in tombstones)
