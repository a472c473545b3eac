"""Access export with disclosure history; staff filing; rectification, restriction, objection (both backends)."""

from __future__ import annotations

import httpx
import pytest

from consent.purposes import APPOINTMENT_REMINDER, MARKETING
from tests.crm_bridge.conftest import CRM_ID, CrmClient, appointment, counter_consent, full_patient
from tests.http.live import LiveServer
from tests.rights.conftest import create, privacy


def _consent(live: LiveServer, pid: str, purpose: str) -> str:
    return create(live, counter_consent(pid, purpose))


def test_access_export_and_disclosure_history(rights_live: LiveServer, rights_crm: CrmClient) -> None:
    pid = create(rights_live, full_patient())
    consent_id = _consent(rights_live, pid, APPOINTMENT_REMINDER)
    appointment_id = create(rights_live, appointment(pid))
    assert [e["type"] for e in rights_crm.feed()][-1] == "appointment.booked"
    with privacy(rights_live, rights_live.auth("privacy_officer")) as officer:
        filed = officer.post(
            "/requests",
            json={
                "type": "access",
                "patient": f"Patient/{pid}",
                "reason": "bệnh nhân yêu cầu bản sao tại quầy",
                "identity_verification": "CCCD đối chiếu tại quầy tiếp đón",
            },
        )
        assert filed.status_code == 201, filed.text
        assert filed.json()["identity_verification"].startswith("CCCD")
        request_id = filed.json()["id"]
        assert officer.post(f"/requests/{request_id}/process", json={}).status_code == 200
        document = officer.get(f"/requests/{request_id}/response").json()
    kinds = sorted(e["resource"]["resourceType"] for e in document["export"]["entry"])
    assert kinds == ["Appointment", "Consent", "Patient"]
    disclosures = document["disclosures"]
    assert any(
        d["recipient"] == CRM_ID
        and d["purpose"] == APPOINTMENT_REMINDER
        and d["resource"] == f"Appointment/{appointment_id}"
        and d["consent"] == f"Consent/{consent_id}"
        for d in disclosures
    )
    # the patient reads the same document; the HTML version lists the disclosures
    with privacy(rights_live, rights_live.auth("patient", patient_id=pid)) as mine:
        page = mine.get(f"/requests/{request_id}/response", params={"format": "html"})
        assert page.status_code == 200 and CRM_ID in page.text and "Disclosure history" in page.text


@pytest.mark.slow
def test_restriction_objection_rectification(rights_live: LiveServer, rights_crm: CrmClient) -> None:
    pid = create(rights_live, full_patient())
    _consent(rights_live, pid, APPOINTMENT_REMINDER)
    _consent(rights_live, pid, MARKETING)
    officer_headers = rights_live.auth("privacy_officer")
    with (
        privacy(rights_live, rights_live.auth("patient", patient_id=pid)) as mine,
        privacy(rights_live, officer_headers) as officer,
    ):
        objection = mine.post(
            "/requests",
            json={"type": "objection", "scope": {"purposes": [MARKETING]}, "reason": "không nhận quảng cáo"},
        ).json()
        assert officer.post(f"/requests/{objection['id']}/process", json={}).status_code == 200
        feed = rights_crm.feed()
        withdrawn = [
            e for e in feed if e["type"] == "consent.changed" and MARKETING in e["data"]["withdrawn"]
        ]
        assert withdrawn, "the objection reached the CRM as a consent withdrawal"

        rect = mine.post("/requests", json={"type": "rectification", "reason": "sai số điện thoại"}).json()
        missing = officer.post(f"/requests/{rect['id']}/process", json={})
        assert missing.status_code == 400 and "resolution" in missing.text
        fixed = officer.post(
            f"/requests/{rect['id']}/process",
            json={"resolution": "HIS updated the phone number on 2026-11-21"},
        )
        assert fixed.status_code == 200 and fixed.json()["status"] == "completed"

        restriction = mine.post("/requests", json={"type": "restriction", "reason": "tạm dừng xử lý"}).json()
        assert officer.post(f"/requests/{restriction['id']}/process", json={}).status_code == 200
    record = httpx.get(f"{rights_live.fhir_url}/Patient/{pid}", headers=rights_live.headers).json()
    assert any(s["code"] == "R" for s in record["meta"]["security"])
    # after the restriction nothing more reaches the CRM for this patient
    before = rights_crm.feed()
    create(rights_live, appointment(pid, start="2026-12-05T09:00:00+07:00"))
    assert rights_crm.feed() == before
    # the Tasks are visible to staff over FHIR, not to the patient
    patient_headers = rights_live.auth("patient", patient_id=pid)
    tasks = httpx.get(f"{rights_live.fhir_url}/Task", params={"patient": pid}, headers=officer_headers).json()
    assert len(tasks["entry"]) == 3
    patient_view = httpx.get(f"{rights_live.fhir_url}/Task", headers=patient_headers)
    assert patient_view.status_code == 403
