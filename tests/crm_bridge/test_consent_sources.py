"""Issue #18 item 3: the CRM records withdrawals and opt-outs only; grants come from the clinic with
channel, text version, recorder and time; a grant dated in the future or more than 24 h back is a
400 naming ``Consent.dateTime`` unless a privacy officer records a reason.  Both backends."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from audit.schema import audit_event
from consent.grants import LATE_REASON_URL, RECORDED_AT_URL, RECORDED_BY_URL
from consent.purposes import APPOINTMENT_REMINDER, CHANNEL_URL, MARKETING, build_consent
from fhir_store import format_instant, now_us
from tests.crm_bridge.conftest import CrmClient, counter_consent, full_patient, his, recent
from tests.http.live import LiveServer

HOUR_US = 3600 * 1_000_000


def _consents(live: LiveServer, patient_id: str) -> list[dict[str, Any]]:
    bundle = httpx.get(
        f"{live.fhir_url}/Consent", params={"patient": patient_id}, headers=live.headers, timeout=30
    ).json()
    return [entry["resource"] for entry in bundle.get("entry") or []]


def _extensions(resource: dict[str, Any]) -> dict[str, Any]:
    return {e["url"]: next(v for k, v in e.items() if k.startswith("value")) for e in resource["extension"]}


def test_a_crm_records_withdrawals_only_effective_at_once(crm_live: LiveServer, crm: CrmClient) -> None:
    with his(crm_live) as http:
        pid = http.post("/Patient", json=full_patient()).json()["id"]
        assert http.post("/Consent", json=counter_consent(pid, APPOINTMENT_REMINDER)).status_code == 201
    subject = crm.feed()[0]["subject"]

    # the attack of the issue: a marketing grant dated 2019 with any text
    forged = {
        "subject": subject,
        "purpose": MARKETING,
        "granted": True,
        "date_time": "2019-01-01T00:00:00+07:00",
        "text": "anything",
        "text_version": "v0",
    }
    refused = crm.http.post("/consents", json=forged)
    assert refused.status_code == 403, refused.text
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["expression"] == ["granted"]
    fresh = crm.http.post("/consents", json={**forged, "date_time": None, "purpose": APPOINTMENT_REMINDER})
    assert fresh.status_code == 403  # a fresh-dated grant too: recipients never authorise themselves
    assert [c["provision"]["type"] for c in _consents(crm_live, pid)] == ["permit"]
    with crm_live.runtime.engine.connect() as conn:
        denials = [row[0] for row in conn.execute(select(audit_event.c.content)) if b"crm-consent" in row[0]]
    assert len(denials) == 2  # each refusal audited

    # a withdrawal is always allowed and dated now, whatever date the CRM sends
    before = crm.feed()[-1]["seq"]
    withdrawn = crm.http.post(
        "/consents",
        json={
            "subject": subject,
            "purpose": APPOINTMENT_REMINDER,
            "granted": False,
            "date_time": "2019-01-01",
        },
    )
    assert withdrawn.status_code == 201, withdrawn.text
    after = crm.feed(before)
    assert [e["type"] for e in after] == ["consent.changed"] and after[0]["data"]["suppress"] is True
    deny = next(c for c in _consents(crm_live, pid) if c["provision"]["type"] == "deny")
    assert abs(crm_live_instant(deny["dateTime"]) - now_us()) < 600 * 1_000_000
    assert _extensions(deny)[RECORDED_BY_URL] == "crm:crm-main"
    # an opt-out of marketing is a withdrawal too
    opt_out = crm.http.post("/consents", json={"subject": subject, "purpose": MARKETING, "granted": False})
    assert opt_out.status_code == 201


def crm_live_instant(text: str) -> int:
    from fhir_store import parse_fhir_instant_range

    return parse_fhir_instant_range(text)[0]


def _officer_grant(live: LiveServer, headers: dict[str, str], **body: Any) -> httpx.Response:
    payload = {
        "purpose": APPOINTMENT_REMINDER,
        "granted": True,
        "channel": "paper",
        "text_version": "mau-dong-y-v5",
        "text": "Tôi đồng ý nhận nhắc lịch hẹn.",
        **body,
    }
    return httpx.post(f"{live.base_url}/privacy/v1/consents", json=payload, headers=headers, timeout=30)


def test_clinic_grants_carry_their_proof_and_a_plausible_date(crm_live: LiveServer) -> None:
    with his(crm_live) as http:
        pid = http.post("/Patient", json=full_patient()).json()["id"]
    officer = crm_live.auth("privacy_officer")

    # now: recorded with channel, text version, who and when
    ok = _officer_grant(crm_live, officer, patient=pid)
    assert ok.status_code == 201, ok.text
    stored = _consents(crm_live, pid)[0]
    stamps = _extensions(stored)
    assert stamps[CHANNEL_URL] == "paper"
    assert stamps[RECORDED_BY_URL].startswith("privacy_officer:")
    assert abs(crm_live_instant(stamps[RECORDED_AT_URL]) - now_us()) < 600 * 1_000_000
    assert stored["sourceAttachment"]["title"] == "mau-dong-y-v5"

    # two days back, or tomorrow: 400 naming Consent.dateTime
    old = format_instant(now_us() - 48 * HOUR_US)
    future = format_instant(now_us() + 24 * HOUR_US)
    for when in (old, future):
        refused = _officer_grant(crm_live, officer, patient=pid, date_time=when)
        assert refused.status_code == 400, refused.text
        assert refused.json()["issue"][0]["expression"] == ["Consent.dateTime"]
    # ... unless the privacy officer records why (a paper form entered late)
    late = _officer_grant(
        crm_live, officer, patient=pid, date_time=old, late_reason="paper form from the weekend clinic"
    )
    assert late.status_code == 201, late.text
    assert any(LATE_REASON_URL in _extensions(c) for c in _consents(crm_live, pid))

    # the front desk through the HIS (/fhir/Consent): the same window, and no late entry for it
    stale = counter_consent(pid, APPOINTMENT_REMINDER, date_time=old)
    with his(crm_live) as http:
        response = http.post("/Consent", json=stale)
        assert response.status_code == 400
        assert response.json()["issue"][0]["expression"] == ["Consent.dateTime"]
        with_reason = counter_consent(pid, APPOINTMENT_REMINDER, date_time=old)
        with_reason["extension"].append({"url": LATE_REASON_URL, "valueString": "a reason the HIS gives"})
        assert http.post("/Consent", json=with_reason).status_code == 400  # not a privacy officer
        assert http.post("/Consent", json=counter_consent(pid, APPOINTMENT_REMINDER)).status_code == 201
        # withdrawals are never refused for their date
        old_deny = build_consent(pid, APPOINTMENT_REMINDER, permit=False, date_time=old, channel="counter")
        assert http.post("/Consent", json=old_deny).status_code == 201


def test_the_patient_form_records_the_patients_own_answers_only(crm_live: LiveServer) -> None:
    with his(crm_live) as http:
        pid = http.post("/Patient", json=full_patient()).json()["id"]
        other = http.post("/Patient", json=full_patient()).json()["id"]
    patient = crm_live.auth("patient", patient_id=pid)
    mine = _officer_grant(crm_live, patient, channel="web", date_time=recent(0.1))
    assert mine.status_code == 201, mine.text
    assert _extensions(_consents(crm_live, pid)[0])[RECORDED_BY_URL].startswith("patient:")
    theirs = _officer_grant(crm_live, patient, patient=other)
    assert theirs.status_code == 403
    assert _consents(crm_live, other) == []
    no_channel = _officer_grant(crm_live, crm_live.auth("privacy_officer"), patient=pid, channel="crm")
    assert no_channel.status_code == 400  # the clinic records how the patient answered, never "crm"
