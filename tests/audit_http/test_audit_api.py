"""``GET /fhir/AuditEvent`` over real HTTP with real tokens, on SQLite and PostgreSQL.

What the compliance officer relies on: searches by patient, agent, date,
action, outcome and type find the right events; only ``compliance_officer``
may look; nobody can write through the API; looking is itself audited; and
denials and refused HL7 messages are in the trail.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from gateway.ingest import Ingestor
from tests.audit_http.conftest import Auditor, agent_id, request_ids
from tests.http.conftest import FHIR_JSON, fhir_post, patient
from tests.http.live import LiveServer
from tests.mllp.conftest import sample


def _create_patient(client: httpx.Client, mrn: str) -> str:
    response = fhir_post(client, "/Patient", patient(mrn))
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _not_auditor(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop the compliance officer's own query events (searching by patient X is an access to X)."""
    return [e for e in events if not agent_id(e).startswith("compliance_officer-")]


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_search_by_patient_agent_date_action_outcome_type(
    live_server: LiveServer, client: httpx.Client, auditor: Auditor
) -> None:
    pid = _create_patient(client, "AUD-1")
    other = _create_patient(client, "AUD-2")
    clinician = live_server.auth("clinician")
    assert httpx.get(f"{live_server.fhir_url}/Patient/{pid}", headers=clinician).status_code == 200

    by_patient = _not_auditor(auditor.events(patient=pid))
    subtypes = {e["subtype"][0]["code"] for e in by_patient}
    assert {"create", "read"} <= subtypes
    for event in by_patient:
        refs = [e["what"].get("reference") for e in event.get("entity", []) if "what" in e]
        assert f"Patient/{pid}" in refs
        assert f"Patient/{other}" not in refs
    assert _not_auditor(auditor.events(patient=f"Patient/{pid}")) == by_patient
    assert auditor.events(patient=pid)[0]["subtype"][0]["code"] == "search-type"  # the previous query

    create = next(e for e in by_patient if e["subtype"][0]["code"] == "create")
    writer = agent_id(create)
    read = next(e for e in by_patient if e["subtype"][0]["code"] == "read")
    reader = agent_id(read)
    assert writer != reader
    assert {agent_id(e) for e in auditor.events(agent=writer)} == {writer}
    assert [e["id"] for e in auditor.events(agent=reader, patient=pid)] == [read["id"]]
    assert {agent_id(e) for e in auditor.events(agent=reader)} == {reader}

    assert {e["action"] for e in auditor.events(patient=pid, action="C")} == {"C"}
    assert len(auditor.events(patient=pid, action="C")) == 1
    assert {e["outcome"] for e in auditor.events(outcome="0")} == {"0"}
    assert {e["type"]["code"] for e in auditor.events(type="rest")} == {"rest"}
    system_token = "http://terminology.hl7.org/CodeSystem/audit-event-type|rest"
    with_system = _not_auditor(auditor.events(type=system_token))
    assert with_system and with_system == _not_auditor(auditor.events(type="rest"))
    assert [e["id"] for e in auditor.events(patient=pid, subtype="read")] == [read["id"]]
    assert auditor.events(entity=f"Patient/{pid}", subtype="read")[0]["id"] == read["id"]

    now = datetime.now(UTC)
    window = [f"ge{_iso(now - timedelta(minutes=5))}", f"lt{_iso(now + timedelta(minutes=5))}"]
    in_window = _not_auditor(auditor.events(patient=pid, date=window))
    assert {e["id"] for e in in_window} == {e["id"] for e in by_patient}
    assert auditor.search(patient=pid, date="lt2000-01-01")["total"] == 0
    assert auditor.search(patient=pid, date="gt" + _iso(now + timedelta(days=1)))["total"] == 0
    today = now.strftime("%Y-%m-%d")
    assert {e["id"] for e in _not_auditor(auditor.events(patient=pid, date=today))} == {
        e["id"] for e in by_patient
    }


def test_paging_links_and_read(live_server: LiveServer, client: httpx.Client, auditor: Auditor) -> None:
    pid = _create_patient(client, "AUD-PAGE")
    for _ in range(3):
        assert client.get(f"/Patient/{pid}").status_code == 200
    first = auditor.search(patient=pid, _count="2")
    total = first["total"]
    assert total >= 4 and len(first["entry"]) == 2
    links = {link["relation"]: link["url"] for link in first["link"]}
    assert "next" in links and "previous" not in links
    seen = [e["resource"]["id"] for e in first["entry"]]
    url: str | None = links["next"]
    while url:
        page = auditor.http.get(url)
        assert page.status_code == 200, page.text
        body = page.json()
        assert body["total"] == total  # frozen: the page requests' own events do not shift it
        seen += [e["resource"]["id"] for e in body.get("entry", [])]
        relations = {link["relation"]: link["url"] for link in body["link"]}
        assert "previous" in relations
        url = relations.get("next")
    assert len(seen) == len(set(seen)) == total
    recorded = [e["resource"]["recorded"] for e in auditor.search(patient=pid, _count="50")["entry"]]
    assert recorded == sorted(recorded, reverse=True)  # newest first by default
    oldest = auditor.search(patient=pid, _sort="date")["entry"]
    assert [e["resource"]["recorded"] for e in oldest] == sorted(e["resource"]["recorded"] for e in oldest)

    one = auditor.http.get(f"/AuditEvent/{seen[0]}")
    assert one.status_code == 200 and one.headers["content-type"].startswith(FHIR_JSON)
    assert one.json()["id"] == seen[0] and one.json()["resourceType"] == "AuditEvent"
    missing = auditor.http.get("/AuditEvent/no-such-event")
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"
    reads = auditor.events(entity=f"AuditEvent/{seen[0]}", subtype="read")
    assert len(reads) == 1 and reads[0]["outcome"] == "0"


def test_bad_parameters_are_400(auditor: Auditor) -> None:
    for params in (
        {"patinet": "1"},
        {"date": "ne2024-01-01"},
        {"_count": "x"},
        {"date": "yesterday"},
        {"_sort": "agent"},
        {"agent": ["a", "b"]},
    ):
        response = auditor.http.get("/AuditEvent", params=params)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("role", ["clinician", "his_integration", "admin", "crm"])
def test_only_compliance_officer_may_search(live_server: LiveServer, role: str) -> None:
    headers = live_server.auth(role)
    for path in ("/AuditEvent", "/AuditEvent/some-id"):
        response = httpx.get(f"{live_server.fhir_url}{path}", headers=headers)
        assert response.status_code == 403, response.text
        body = response.json()
        assert body["resourceType"] == "OperationOutcome"
        diagnostics = body["issue"][0]["diagnostics"]
        if role in ("clinician", "his_integration"):  # FHIR roles: the missing scope is named
            assert "AuditEvent" in diagnostics and "scope" in diagnostics


def test_no_token_is_401(live_server: LiveServer) -> None:
    response = httpx.get(f"{live_server.fhir_url}/AuditEvent")
    assert response.status_code == 401
    assert response.json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/AuditEvent"),
        ("PUT", "/AuditEvent/abc"),
        ("DELETE", "/AuditEvent/abc"),
        ("PATCH", "/AuditEvent/abc"),
        ("PUT", "/AuditEvent?identifier=x"),
        ("DELETE", "/AuditEvent?identifier=x"),
        ("GET", "/AuditEvent/abc/_history"),
        ("GET", "/AuditEvent/abc/_history/1"),
        ("GET", "/AuditEvent/_history"),
    ],
)
def test_no_interaction_but_read_and_search(
    live_server: LiveServer, auditor: Auditor, method: str, path: str
) -> None:
    body = {"resourceType": "AuditEvent", "id": "abc"}
    for role in ("compliance_officer", "his_integration"):
        headers = {"Content-Type": FHIR_JSON, **live_server.auth(role)}
        response = httpx.request(method, f"{live_server.fhir_url}{path}", json=body, headers=headers)
        assert response.status_code == 405, (role, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    admin = httpx.request(
        method, f"{live_server.fhir_url}{path}", json=body, headers=live_server.auth("admin")
    )
    assert admin.status_code in (403, 405)
    if method != "GET":  # the attempt to write the trail is itself in the trail
        attempts = [e for e in auditor.events(outcome="4") if e["outcome"].startswith("4")]
        assert len(attempts) >= 2


def test_metadata_lists_auditevent_read_and_search(live_server: LiveServer) -> None:
    statement = httpx.get(f"{live_server.fhir_url}/metadata").json()
    entry = next(r for r in statement["rest"][0]["resource"] if r["type"] == "AuditEvent")
    assert sorted(i["code"] for i in entry["interaction"]) == ["read", "search-type"]
    names = {p["name"] for p in entry["searchParam"]}
    assert {"patient", "agent", "entity", "date", "action", "outcome", "type", "subtype", "purpose"} <= names


def test_the_search_itself_is_audited(auditor: Auditor) -> None:
    auditor.search(action="C", outcome="0")
    mine = agent_id(auditor.events(subtype="search-type")[0])
    searches = auditor.events(agent=mine, subtype="search-type")
    queries = [
        e.get("description")
        for event in searches
        for e in event.get("entity", [])
        if e.get("role", {}).get("code") == "24"
    ]
    assert any(q and q.startswith("AuditEvent?") and "action=C" in q for q in queries)
    assert all(e["action"] == "E" and e["outcome"] == "0" for e in searches)


def test_denials_are_audited_once_with_outcome_12(
    live_server: LiveServer, client: httpx.Client, auditor: Auditor
) -> None:
    clinician = live_server.auth("clinician")
    refused = httpx.get(f"{live_server.fhir_url}/AuditEvent", headers=clinician)  # route scope check
    no_token = httpx.get(f"{live_server.fhir_url}/Patient")  # auth binding
    pid = _create_patient(client, "AUD-DENY")
    other = _create_patient(client, "AUD-OTHER")
    own = live_server.auth("patient", patient_id=pid)
    compartment = httpx.get(f"{live_server.fhir_url}/Patient/{other}", headers=own)  # store path
    assert (refused.status_code, no_token.status_code) == (403, 401)
    assert compartment.status_code in (403, 404)

    denials = auditor.events(outcome="12")
    by_request: dict[str, list[dict[str, Any]]] = {}
    for event in denials:
        for rid in request_ids(event):
            by_request.setdefault(rid, []).append(event)
    for response in (refused, no_token) + ((compartment,) if compartment.status_code == 403 else ()):
        events = by_request.get(response.headers["x-request-id"], [])
        assert len(events) == 1, (response.status_code, events)
        assert events[0]["action"] in ("R", "E")
    assert agent_id(by_request[refused.headers["x-request-id"]][0]).startswith("clinician-")
    assert agent_id(by_request[no_token.headers["x-request-id"]][0]) == "unauthenticated"


def test_failed_write_is_audited(live_server: LiveServer, client: httpx.Client, auditor: Auditor) -> None:
    bad = fhir_post(client, "/Patient", {**patient("AUD-BAD"), "birthDate": "not-a-date"})
    assert bad.status_code == 400
    events = [e for e in auditor.events(outcome="4") if bad.headers["x-request-id"] in request_ids(e)]
    assert len(events) == 1 and events[0]["subtype"][0]["code"] == "create"
    assert "not-a-date" not in str(events[0])


def test_hl7_messages_are_import_events(live_server: LiveServer, auditor: Auditor) -> None:
    ingestor = Ingestor(live_server.runtime.store, live_server.runtime.settings)
    rejected = ingestor.handle(sample("bad_unsupported_trigger"), peer="10.9.8.7:5000")
    failed = ingestor.handle(sample("bad_invalid_birthdate"), peer="10.9.8.7:5000")
    accepted = ingestor.handle(sample("adt_a04_register_outpatient"), peer="10.9.8.7:5000")
    again = ingestor.handle(sample("adt_a04_register_outpatient"), peer="10.9.8.7:5000")  # duplicate
    assert (rejected.ack_code, failed.ack_code, accepted.ack_code) == ("AR", "AE", "AA")
    assert again.duplicate

    imports = auditor.events(type="110107")
    messages = [e for e in imports if e["subtype"][0]["code"] == "hl7-message"]

    def job(event: dict[str, Any]) -> str:
        return str(
            next(
                e["what"]["identifier"]["value"]
                for e in event["entity"]
                if e.get("role", {}).get("code") == "20"
            )
        )

    by_control = {job(e): e for e in messages if e["outcome"] != "0"}
    assert by_control["HIS009003"]["outcome"] == "8" and by_control["HIS009003"]["outcomeDesc"] == "ACK AR"
    assert by_control["HIS009002"]["outcome"] == "4"
    assert agent_id(by_control["HIS009003"]) == "HIS_VN"
    for event in by_control.values():
        assert not any(e.get("role", {}).get("code") == "1" for e in event["entity"])  # no patient
        assert "Nguy" not in str(event)
    # the accepted message: per-resource import events from the store, no separate message event ...
    changed = [e for e in imports if e["subtype"][0]["code"] in ("create", "update")]
    assert changed and all(e["outcome"] == "0" for e in changed)
    # ... and its duplicate delivery, which changes nothing, one message event
    duplicates = [e for e in messages if e["outcome"] == "0"]
    assert len(duplicates) == 1
    assert auditor.events(type="110107", outcome="8", action="C")
