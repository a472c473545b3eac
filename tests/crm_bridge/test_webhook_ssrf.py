"""Issue #16 item 6 end to end (both backends, real HTTP, real tokens): a CRM cannot aim webhooks inward.

Registration is refused with a 400 naming ``url``; a name that resolves to a
public address at registration and to loopback at delivery (DNS rebinding)
gets nothing; delivery failures reach the CRM as categories; creating and
stopping a webhook is in the audit trail.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from sqlalchemy import select

from audit.schema import audit_event
from consent.purposes import APPOINTMENT_REMINDER
from crm_bridge.webhook_policy import system_resolver
from tests.crm_bridge.conftest import CrmClient, Receiver, counter_consent, full_patient, his, serve_crm
from tests.http.live import LiveServer

PUBLIC = "93.184.216.34"


@pytest.fixture
def strict_live(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """carebridge with the default webhook policy: https only, nothing non-public allowed."""
    with serve_crm(
        database_url, tmp_path, crm_allow_http_webhooks="false", crm_webhook_allowed_networks=""
    ) as live:
        yield live


def _dns(*answers: list[str]) -> Callable[[str, int], list[str]]:
    """``crm.example`` answers ``answers[0]``, then ``answers[1]``... (last repeats); other names: real DNS."""
    asked = 0

    def resolve(host: str, port: int) -> list[str]:
        nonlocal asked
        if host != "crm.example":
            return system_resolver(host, port)
        asked += 1
        return answers[min(asked, len(answers)) - 1]

    return resolve


def _audited(live: LiveServer, marker: bytes) -> list[dict[str, Any]]:
    with live.runtime.engine.connect() as conn:
        rows = conn.execute(select(audit_event.c.content)).all()
    return [orjson.loads(bytes(r[0])) for r in rows if marker in bytes(r[0])]


def _interaction(event: dict[str, Any]) -> tuple[str, str]:
    return str(event["subtype"][0]["code"]), str(event["outcome"])


def _event_for_crm(live: LiveServer) -> None:
    """A consented patient: one event on the CRM's feed."""
    with his(live) as http:
        patient = http.post("/Patient", json=full_patient())
        assert patient.status_code == 201, patient.text
        pid = patient.json()["id"]
        consent = http.post("/Consent", json=counter_consent(pid, APPOINTMENT_REMINDER))
        assert consent.status_code == 201, consent.text


def _last_error(crm: CrmClient) -> Any:
    (sub,) = crm.http.get("/subscriptions").json()["subscriptions"]
    return sub["last_error"]


REFUSED = [
    "http://crm.example/hook",  # plain http
    "https://127.0.0.1/hook",
    "https://[::1]:8443/hook",
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.5/hook",
    "https://localhost/hook",  # a name for loopback
]


def test_registration_refuses_inward_targets_with_a_400_on_url(strict_live: LiveServer) -> None:
    strict_live.runtime.crm.webhooks.resolver = _dns([PUBLIC])
    crm = CrmClient(strict_live)
    for url in REFUSED:
        response = crm.http.post("/subscriptions", json={"url": url})
        assert response.status_code == 400, (url, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["expression"] == ["url"], url
    assert crm.http.get("/subscriptions").json()["subscriptions"] == []
    created = crm.http.post("/subscriptions", json={"url": "https://crm.example/hooks/carebridge"})
    assert created.status_code == 201, created.text  # a public https target is fine
    refusals = [e for e in _audited(strict_live, b"refused: url") if _interaction(e) == ("create", "4")]
    assert len(refusals) == len(REFUSED)  # each attempt is on record, with who made it
    assert all(b"crm-main" in orjson.dumps(e["agent"]) for e in refusals)


def test_carebridge_own_port_is_refused_even_with_loopback_allowed(
    crm_live: LiveServer, crm: CrmClient
) -> None:
    """The suite allows loopback http for its receivers; carebridge's own listener stays off limits."""
    port = urlsplit(crm_live.base_url).port
    for url in (f"http://127.0.0.1:{port}/metrics", f"http://127.0.0.1:{port}/fhir/Patient"):
        response = crm.http.post("/subscriptions", json={"url": url})
        assert response.status_code == 400, response.text
        assert response.json()["issue"][0]["expression"] == ["url"]
        assert "carebridge itself" in response.text


def test_dns_rebinding_is_refused_at_delivery(database_url: str, tmp_path: Path, receiver: Receiver) -> None:
    """Public at registration, loopback at delivery: nothing is posted and the CRM sees why."""
    with serve_crm(database_url, tmp_path, crm_webhook_allowed_networks="") as live:  # http allowed
        live.runtime.crm.webhooks.resolver = _dns([PUBLIC], ["127.0.0.1"])
        crm = CrmClient(live)
        url = f"http://crm.example:{receiver.port}/hook"
        assert crm.http.post("/subscriptions", json={"url": url}).status_code == 201
        _event_for_crm(live)
        assert live.runtime.crm.dispatcher.run_once() == 0
        assert receiver.received == []
        assert _last_error(crm) == "target-refused-by-policy"
        crm.http.close()


def test_delivery_failures_reach_the_crm_as_categories(
    crm_live: LiveServer, crm: CrmClient, receiver: Receiver
) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        free = closed.getsockname()[1]  # nobody listens once closed
    assert crm.http.post("/subscriptions", json={"url": f"http://127.0.0.1:{free}/hook"}).status_code == 201
    _event_for_crm(crm_live)
    crm_live.runtime.crm.dispatcher.run_once()
    assert _last_error(crm) == "connection-refused"  # not "[Errno 111] Connection refused"
    (sub,) = crm.http.get("/subscriptions").json()["subscriptions"]
    assert crm.http.delete(f"/subscriptions/{sub['id']}").status_code == 204
    receiver.status = 503
    assert crm.http.post("/subscriptions", json={"url": receiver.url}).status_code == 201
    crm_live.runtime.crm.dispatcher.run_once()
    errors = {s["url"]: s["last_error"] for s in crm.http.get("/subscriptions").json()["subscriptions"]}
    assert errors[receiver.url] == "http-5xx"


def test_subscription_create_and_delete_are_audited(
    crm_live: LiveServer, crm: CrmClient, receiver: Receiver
) -> None:
    created = crm.http.post("/subscriptions", json={"url": receiver.url})
    assert created.status_code == 201
    sub_id = created.json()["id"]
    assert crm.http.delete(f"/subscriptions/{sub_id}").status_code == 204
    assert crm.http.delete("/subscriptions/no-such-subscription").status_code == 404
    events = _audited(crm_live, f"Subscription/{sub_id}".encode())
    assert sorted(_interaction(e) for e in events) == [("create", "0"), ("delete", "0")]
    for event in events:
        assert b"crm-main" in orjson.dumps(event["agent"])
        assert receiver.url.encode() not in orjson.dumps(event)  # the URL (and any token in it) is not copied
    missing = _audited(crm_live, b"Subscription/no-such-subscription")
    assert [_interaction(e) for e in missing] == [("delete", "4")]


def test_a_relaxed_policy_is_announced_at_start(
    crm_live: LiveServer, strict_live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The suite's settings allow loopback http (as the demo's do): the server says so when it starts."""
    with caplog.at_level(logging.WARNING, logger="carebridge.crm.delivery"):
        crm_live.runtime.crm.start()
        crm_live.runtime.crm.stop()
    relaxed = [r.getMessage() for r in caplog.records]
    assert any("plain http" in m for m in relaxed) and any("127.0.0.0/8" in m for m in relaxed)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="carebridge.crm.delivery"):
        strict_live.runtime.crm.start()
        strict_live.runtime.crm.stop()
    assert [r.getMessage() for r in caplog.records] == []
