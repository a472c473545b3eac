"""The webhook delivery latency histogram records every attempt from the start, not from the first scrape."""

from __future__ import annotations

import re

import httpx

from consent.purposes import APPOINTMENT_REMINDER
from tests.crm_bridge.conftest import CrmClient, Receiver, counter_consent, full_patient, his
from tests.http.live import LiveServer

_COUNT = re.compile(r'^carebridge_crm_webhook_delivery_seconds_count\{outcome="(ok|error)"\} (\S+)$', re.M)


def _attempts(live: LiveServer) -> dict[str, float]:
    response = httpx.get(f"{live.base_url}/metrics", timeout=30)
    assert response.status_code == 200
    return {outcome: float(value) for outcome, value in _COUNT.findall(response.text)}


def test_attempts_before_the_first_scrape_are_counted(
    crm_live: LiveServer, crm: CrmClient, receiver: Receiver
) -> None:
    assert crm.http.post("/subscriptions", json={"url": receiver.url}).status_code == 201
    with his(crm_live) as http:
        pid = http.post("/Patient", json=full_patient()).json()["id"]
        assert http.post("/Consent", json=counter_consent(pid, APPOINTMENT_REMINDER)).status_code == 201
    dispatcher = crm_live.runtime.crm.dispatcher
    assert dispatcher.run_once() == 2  # consent.changed + patient.upserted, before any scrape
    receiver.status = 500
    with his(crm_live) as http:
        patched = full_patient(telecom=[{"system": "phone", "value": "+84987654321"}], id=pid)
        assert http.put(f"/Patient/{pid}", json=patched).status_code == 200
    dispatcher.run_once()  # one failed attempt (the receiver answers 500), retried later

    assert _attempts(crm_live) == {"ok": 2.0, "error": 1.0}
