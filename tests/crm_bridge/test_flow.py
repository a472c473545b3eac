"""End-to-end over real HTTP (both backends): consent gates the feed and the webhooks."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from audit.schema import audit_event
from consent.purposes import APPOINTMENT_REMINDER, MARKETING, POST_VISIT_CARE, PURPOSES, build_consent
from crm_bridge.delivery import verify_signature
from crm_bridge.outbox import rotate_pseudonyms
from fhir_store.instants import now_us
from fhir_store.model import RequestContext
from tests.crm_bridge.conftest import (
    CRM_ID,
    CrmClient,
    Receiver,
    appointment,
    encounter,
    full_patient,
    his,
    recent,
    wait_for,
)
from tests.http.live import LiveServer

NOW = recent(3)  # grants are refused when dated more than 24 h back (consent.grants)
ALLOWED = {
    "patient.upserted": {"purposes", "patient"},
    "consent.changed": {"purposes", "granted", "withdrawn", "suppress"},
    "appointment.booked": {"purpose", "appointment"},
    "encounter.completed": {"purpose", "encounter"},
}
PATIENT_FIELDS = {"pseudonym", "display_name", "gender", "birth_year", "phone", "zalo"}


def _create(http: httpx.Client, resource: dict[str, Any]) -> str:
    response = http.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _consent(
    http: httpx.Client, patient_id: str, purpose: str, *, permit: bool = True, when: str = NOW
) -> str:
    return _create(
        http,
        build_consent(
            patient_id,
            purpose,
            permit=permit,
            date_time=when,
            channel="counter",
            text_version="v3-2026",
            text_shown="Tôi đồng ý nhận nhắc lịch hẹn qua điện thoại/Zalo.",
            recipient=CRM_ID,
        ),
    )


def _subscribe(crm: CrmClient, receiver: Receiver) -> str:
    response = crm.http.post("/subscriptions", json={"url": receiver.url})
    assert response.status_code == 201, response.text
    return str(response.json()["secret"])


def test_no_consent_no_event(crm_live: LiveServer, crm: CrmClient, receiver: Receiver) -> None:
    _subscribe(crm, receiver)
    with his(crm_live) as http:
        pid = _create(http, full_patient())
        _create(http, appointment(pid))
        _create(http, encounter(pid))
    crm_live.runtime.crm.dispatcher.run_once()
    assert crm.feed() == []
    assert receiver.received == []
    # every decision was audited: three purposes for the Patient, one each for the others, all deny
    with crm_live.runtime.engine.connect() as conn:
        outcomes = [
            r[0] for r in conn.execute(select(audit_event.c.content)).all() if b"consent-decision" in r[0]
        ]
    assert len(outcomes) >= 5 and all(b'"outcome":"4"' in o for o in outcomes)


def test_consent_granted_events_carry_pseudonym_and_only_allowlisted_fields(
    crm_live: LiveServer, crm: CrmClient, receiver: Receiver
) -> None:
    secret = _subscribe(crm, receiver)
    with his(crm_live) as http:
        pid = _create(http, full_patient())
        _consent(http, pid, APPOINTMENT_REMINDER)
        _consent(http, pid, POST_VISIT_CARE)
        _create(http, appointment(pid))
        _create(http, encounter(pid))
    events = crm.feed()
    types = [e["type"] for e in events]
    assert types == [
        "consent.changed",
        "patient.upserted",
        "consent.changed",  # a second purpose; the projection did not change, so no new upsert
        "appointment.booked",
        "encounter.completed",
    ]
    subjects = {e["subject"] for e in events}
    assert len(subjects) == 1 and pid not in next(iter(subjects))
    for event in events:
        assert set(event["data"]) <= ALLOWED[event["type"]]
    patient = events[1]["data"]["patient"]
    assert set(patient) <= PATIENT_FIELDS
    assert patient == {
        "pseudonym": events[1]["subject"],
        "display_name": "Nguyễn Văn An",
        "gender": "male",
        "birth_year": 1985,
        "phone": "+84912345678",
    }
    assert events[3]["data"]["appointment"]["service"] == {
        "code": "NIENG",
        "display": "Niềng răng - tái khám",
    }
    assert events[4]["data"]["encounter"] == {
        "completed_at": "2026-11-20T10:15:00+07:00",
        "service_type": {"code": "NHA", "display": "Nha khoa"},
    }
    dispatcher = crm_live.runtime.crm.dispatcher
    dispatcher.run_once()
    assert [e["id"] for e in receiver.events()] == [e["id"] for e in events]
    for index, (_headers, body) in enumerate(receiver.received):
        assert verify_signature(secret.encode(), body, receiver.signature(index))
        assert not verify_signature(b"wrong", body, receiver.signature(index))


def test_withdrawal_suppresses_then_nothing_more(crm_live: LiveServer, crm: CrmClient) -> None:
    with his(crm_live) as http:
        pid = _create(http, full_patient())
        _consent(http, pid, APPOINTMENT_REMINDER)
        before = crm.feed()
        _consent(http, pid, APPOINTMENT_REMINDER, permit=False, when=recent(2))
        after = crm.feed(before[-1]["seq"])
        assert [e["type"] for e in after] == ["consent.changed"]
        assert after[0]["data"]["suppress"] is True and after[0]["data"]["withdrawn"] == [
            APPOINTMENT_REMINDER
        ]
        _create(http, appointment(pid))
        _create(http, encounter(pid))
        patched = full_patient(telecom=[{"system": "phone", "value": "+84987654321"}])
        patched["id"] = pid
        assert http.put(f"/Patient/{pid}", json=patched).status_code == 200
    assert crm.feed(after[-1]["seq"]) == []


def test_deleting_a_consent_withdraws_it_for_every_later_disclosure(
    crm_live: LiveServer, crm: CrmClient, receiver: Receiver
) -> None:
    """``DELETE /fhir/Consent/{id}`` is a withdrawal: a deleted Consent permits nothing (deny by default)."""
    secret = _subscribe(crm, receiver)
    bridge = crm_live.runtime.crm
    with his(crm_live) as http:
        pid = _create(http, full_patient())
        reminder = _consent(http, pid, APPOINTMENT_REMINDER)
        post_visit = _consent(http, pid, POST_VISIT_CARE)
        granted = crm.feed()
        assert [e["type"] for e in granted] == ["consent.changed", "patient.upserted", "consent.changed"]

        assert http.delete(f"/Consent/{reminder}").status_code == 204
        _create(http, appointment(pid))  # a reminder purpose: no longer permitted
        one_left = crm.feed(granted[-1]["seq"])
        assert [e["type"] for e in one_left] == ["consent.changed"]
        assert one_left[0]["data"] == {
            "purposes": [POST_VISIT_CARE],
            "granted": [],
            "withdrawn": [APPOINTMENT_REMINDER],
            "suppress": False,
        }

        assert http.delete(f"/Consent/{post_visit}").status_code == 204
        none_left = crm.feed(one_left[-1]["seq"])
        assert [e["type"] for e in none_left] == ["consent.changed"]
        assert none_left[0]["data"] == {
            "purposes": [],
            "granted": [],
            "withdrawn": [POST_VISIT_CARE],
            "suppress": True,
        }
        # nothing about the patient reaches the CRM any more
        _create(http, appointment(pid, start="2026-12-02T09:00:00+07:00"))
        _create(http, encounter(pid))
        patched = full_patient(telecom=[{"system": "phone", "value": "+84987654321"}])
        patched["id"] = pid
        assert http.put(f"/Patient/{pid}", json=patched).status_code == 200
    assert crm.feed(none_left[-1]["seq"]) == []

    # the decision point itself now denies every purpose for this patient
    context = RequestContext("test-consent-deleted", client_id="test", role="system")
    with crm_live.runtime.engine.connect() as conn:
        session = bridge.pdp.session(conn, context, now_us())
        assert not any(session.decide(pid, purpose, CRM_ID).permit for purpose in PURPOSES)

    # the webhook receiver got exactly the feed as it stands after the withdrawals: the projection
    # disclosed under the withdrawn purposes is no longer served to anyone (issue #18 item 2),
    # the suppression last, nothing after it
    bridge.dispatcher.run_once()
    delivered = receiver.events()
    served = [e for e in granted + one_left + none_left if e["type"] != "patient.upserted"]
    assert [e["id"] for e in delivered] == [e["id"] for e in served]
    assert [e["id"] for e in crm.feed()] == [e["id"] for e in served]
    assert delivered[-1]["data"]["suppress"] is True
    for index, (_headers, body) in enumerate(receiver.received):
        assert verify_signature(secret.encode(), body, receiver.signature(index))


def test_marketing_needs_its_own_consent_and_opt_out_wins(crm_live: LiveServer, crm: CrmClient) -> None:
    with his(crm_live) as http:
        pid = _create(http, full_patient())
        bundled = build_consent(
            pid, MARKETING, permit=True, date_time=NOW, channel="web", text_version="v1", text_shown="x"
        )
        bundled["provision"]["purpose"].append(
            bundled["provision"]["purpose"][0] | {"code": APPOINTMENT_REMINDER}
        )
        response = http.post("/Consent", json=bundled)
        assert response.status_code == 400 and "marketing" in response.text
        no_text = build_consent(pid, APPOINTMENT_REMINDER, permit=True, date_time=NOW, channel="web")
        assert http.post("/Consent", json=no_text).status_code == 400
        _consent(http, pid, MARKETING, permit=False, when="2026-01-01T00:00:00+07:00")  # old opt-out
        _consent(http, pid, MARKETING, permit=True, when=recent(1))  # newer permit
    assert crm.feed() == []  # an active opt-out always wins for marketing


def test_restricted_labels_never_reach_the_crm(crm_live: LiveServer, crm: CrmClient) -> None:
    with his(crm_live) as http:
        restricted = full_patient(
            meta={
                "security": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}
                ]
            }
        )
        rid = _create(http, restricted)
        _consent(http, rid, POST_VISIT_CARE)
        pid = _create(http, full_patient())
        _consent(http, pid, POST_VISIT_CARE)
        seen = crm.feed()
        _create(
            http,
            encounter(
                pid,
                meta={
                    "security": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}
                    ]
                },
            ),
        )
    assert {e["type"] for e in seen} == {"consent.changed", "patient.upserted"}
    assert len({e["subject"] for e in seen}) == 1  # only the unrestricted patient
    assert crm.feed(seen[-1]["seq"]) == []


def test_receiver_down_then_every_event_in_order_once(
    crm_live: LiveServer, crm: CrmClient, receiver: Receiver
) -> None:
    secret = _subscribe(crm, receiver)
    bridge = crm_live.runtime.crm
    receiver.stop()
    bridge.start()
    try:
        with his(crm_live) as http:
            pids = [_create(http, full_patient()) for _ in range(3)]
            for pid in pids:
                _consent(http, pid, APPOINTMENT_REMINDER)
                _consent(http, pid, POST_VISIT_CARE)
            for pid in pids:
                _create(http, appointment(pid))
                _create(http, encounter(pid))
        expected = crm.feed()
        assert len(expected) == 3 * 5
        wait_for(lambda: crm.http.get("/subscriptions").json()["subscriptions"][0]["attempts"] >= 3, 20)
        receiver.start()
        wait_for(lambda: len(receiver.received) >= len(expected), 30)
    finally:
        bridge.stop()
    got = receiver.events()
    assert [e["id"] for e in got] == [e["id"] for e in expected]  # once each, feed order
    for subject in {e["subject"] for e in expected}:
        seqs = [e["seq"] for e in got if e["subject"] == subject]
        assert seqs == sorted(seqs)
    for index, (_headers, body) in enumerate(receiver.received):
        assert verify_signature(secret.encode(), body, receiver.signature(index))


def test_dead_letter_and_redelivery(crm_live: LiveServer, crm: CrmClient, receiver: Receiver) -> None:
    _subscribe(crm, receiver)
    bridge = crm_live.runtime.crm
    dispatcher = bridge.dispatcher
    dispatcher.settings = dispatcher.settings.__class__(
        **{**dispatcher.settings.__dict__, "webhook_max_attempts": 2, "webhook_backoff_base_s": 0.0}
    )
    receiver.status = 500
    with his(crm_live) as http:
        pid = _create(http, full_patient())
        _consent(http, pid, APPOINTMENT_REMINDER)
    for _ in range(6):
        dispatcher.run_once()
    subs = crm.http.get("/subscriptions").json()["subscriptions"]
    assert subs[0]["dead_letters"] and len(subs[0]["dead_letters"]) == 2
    receiver.status = 200
    sub_id = subs[0]["id"]
    assert crm.http.post(f"/subscriptions/{sub_id}/redeliver", json={}).json() == {"requeued": 2}
    receiver.received.clear()
    dispatcher.run_once()
    assert [e["type"] for e in receiver.events()] == ["consent.changed", "patient.upserted"]
    assert crm.http.get("/subscriptions").json()["subscriptions"][0]["dead_letters"] == []


def test_rotation_keeps_links_and_reidentification_is_audited(crm_live: LiveServer, crm: CrmClient) -> None:
    bridge = crm_live.runtime.crm
    with his(crm_live) as http:
        pid = _create(http, full_patient())
        _consent(http, pid, APPOINTMENT_REMINDER)
        old = crm.feed()[-1]["subject"]
        with crm_live.runtime.store.write_connection() as conn:
            assert rotate_pseudonyms(conn, bridge.keys, CRM_ID) == 1
        rotated = [e for e in crm.feed() if e["type"] == "pseudonym.rotated"]
        assert rotated[0]["data"]["mappings"] == [{"old": old, "new": bridge.keys.pseudonym(CRM_ID, pid)}]
        _create(http, appointment(pid))
    new = crm.feed()[-1]["subject"]
    assert new != old and new.startswith("k2.")
    officer = crm_live.auth("privacy_officer")
    url = f"{crm_live.base_url}/crm/v1/reidentify"
    for pseudonym in (old, new):
        body = {
            "crm": CRM_ID,
            "pseudonym": pseudonym,
            "reason": "Patient complaint #42 requires identification",
        }
        response = httpx.post(url, json=body, headers=officer)
        assert response.status_code == 200 and response.json()["patient"] == f"Patient/{pid}"
    assert httpx.post(url, json={"crm": CRM_ID, "pseudonym": new}, headers=officer).status_code == 400
    assert httpx.post(url, json=body, headers=dict(crm.http.headers)).status_code == 403
    with crm_live.runtime.engine.connect() as conn:
        audited = [
            r[0] for r in conn.execute(select(audit_event.c.content)).all() if b"re-identification" in r[0]
        ]
    assert len(audited) == 2 and all(b"Patient complaint #42" in a for a in audited)


def test_roles_are_confined(crm_live: LiveServer, crm: CrmClient) -> None:
    assert httpx.get(f"{crm_live.fhir_url}/Patient", headers=dict(crm.http.headers)).status_code == 403
    assert httpx.get(f"{crm_live.base_url}/crm/v1/changes", headers=crm_live.headers).status_code == 403
    assert httpx.get(f"{crm_live.base_url}/crm/v1/changes").status_code == 401


def test_crm_recorded_opt_out_and_patient_erased(crm_live: LiveServer, crm: CrmClient) -> None:
    from crm_bridge.outbox import emit_patient_erased

    with his(crm_live) as http:
        pid = _create(http, full_patient())
        _consent(http, pid, APPOINTMENT_REMINDER)
    pseudonym = crm.feed()[-1]["subject"]
    body = {"subject": pseudonym, "purpose": APPOINTMENT_REMINDER, "granted": False, "channel": "zalo"}
    assert crm.http.post("/consents", json=body).status_code == 201
    assert crm.feed()[-1]["data"]["suppress"] is True
    bridge = crm_live.runtime.crm
    with crm_live.runtime.store.write_connection() as conn:
        retained = [{"what": "medical record", "why": "Circular 33/2025/TT-BYT retention"}]
        assert emit_patient_erased(conn, bridge.keys, pid, retained=retained) == 1
    events = crm.feed()
    assert [e["type"] for e in events] == ["patient.erased"]  # earlier events of the patient purged
    assert events[0]["data"] == {"pseudonyms": [pseudonym], "retained": retained}
    assert crm.http.post("/consents", json=body).status_code == 404  # the pseudonym no longer resolves
