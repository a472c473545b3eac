"""The CRM API leaves an AuditEvent per call (issue #18 item 6), both backends.

``POST /crm/v1/consents``: exactly one event per call with its outcome, accepted or
refused; subscription create, redelivery (update) and delete each leave one; every
event carries the CRM's purpose of use, and a purpose a CRM may not state is refused.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from sqlalchemy import select

from audit.schema import audit_event
from consent.purposes import APPOINTMENT_REMINDER
from gateway.auth.purpose import HEADER
from tests.crm_bridge.conftest import CrmClient, Receiver, counter_consent, full_patient, his
from tests.http.live import LiveServer


def _events(live: LiveServer, response: httpx.Response) -> list[dict[str, Any]]:
    live.runtime.audit.flush()
    request_id = response.headers["x-request-id"]
    with live.runtime.engine.connect() as conn:
        rows = conn.execute(select(audit_event.c.content).order_by(audit_event.c.seq)).all()
    events = [orjson.loads(r[0]) for r in rows]
    return [
        e
        for e in events
        if any(
            x.get("what", {}).get("identifier", {}).get("value") == request_id for x in e.get("entity", [])
        )
    ]


def _one(live: LiveServer, response: httpx.Response) -> dict[str, Any]:
    """The call's own event (the outbox's per-CRM ``consent-decision`` events are not the call)."""
    events = [e for e in _events(live, response) if e["subtype"][0]["code"] != "consent-decision"]
    assert len(events) == 1, [e.get("subtype") for e in events]
    purposes = [c["code"] for p in events[0].get("purposeOfEvent", []) for c in p["coding"]]
    assert purposes == ["HOPERAT"]
    return events[0]


def test_consent_calls_leave_one_event_each(crm_live: LiveServer, crm: CrmClient) -> None:
    with his(crm_live) as http:
        created = http.post("/Patient", json=full_patient())
        assert created.status_code == 201
        pid = created.json()["id"]
        assert http.post("/Consent", json=counter_consent(pid, APPOINTMENT_REMINDER)).status_code == 201
    subject = crm.feed()[-1]["subject"]
    withdrawn = crm.http.post(
        "/consents", json={"subject": subject, "purpose": APPOINTMENT_REMINDER, "granted": False}
    )
    assert withdrawn.status_code == 201, withdrawn.text
    assert _one(crm_live, withdrawn)["outcome"] == "0"
    bad_purpose = crm.http.post("/consents", json={"subject": subject, "purpose": "nope", "granted": False})
    assert bad_purpose.status_code == 400
    event = _one(crm_live, bad_purpose)
    assert event["outcome"] == "4" and "refused" in event["outcomeDesc"]
    unknown = crm.http.post(
        "/consents", json={"subject": "not-a-pseudonym", "purpose": APPOINTMENT_REMINDER, "granted": False}
    )
    assert unknown.status_code == 404
    assert _one(crm_live, unknown)["outcome"] == "4"
    # a purpose the CRM may not state: refused before the route, audited once as a denial
    treat = crm.http.post(
        "/consents",
        json={"subject": subject, "purpose": APPOINTMENT_REMINDER, "granted": False},
        headers={HEADER: "TREAT"},
    )
    assert treat.status_code == 403 and HEADER in treat.text
    denial = _events(crm_live, treat)
    assert len(denial) == 1 and denial[0]["outcome"] == "12"


def test_subscription_changes_are_audited(crm_live: LiveServer, crm: CrmClient, receiver: Receiver) -> None:
    created = crm.http.post("/subscriptions", json={"url": receiver.url})
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    assert _one(crm_live, created)["subtype"][0]["code"] == "create"
    redelivered = crm.http.post(f"/subscriptions/{sub_id}/redeliver", json={"from_cursor": 0})
    assert redelivered.status_code == 200, redelivered.text
    event = _one(crm_live, redelivered)
    assert event["subtype"][0]["code"] == "update" and event["outcome"] == "0"
    assert event["entity"][0]["what"]["reference"] == f"Subscription/{sub_id}"
    missing = crm.http.post("/subscriptions/nope/redeliver", json={})
    assert missing.status_code == 404 and _one(crm_live, missing)["outcome"] == "4"
    deleted = crm.http.delete(f"/subscriptions/{sub_id}")
    assert deleted.status_code == 204
    assert _one(crm_live, deleted)["subtype"][0]["code"] == "delete"
