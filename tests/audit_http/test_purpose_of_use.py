"""Every API access carries a purpose of use (issue #18 item 6; IHE BALP purposeOfEvent).

The ``X-Purpose-Of-Use`` header states it; without it the role's default applies;
a code the role may not state is a 403 OperationOutcome naming the header, and the
refusal is audited.  Both backends, real HTTP, real tokens.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from common import Forbidden
from gateway.auth.purpose import HEADER, ROLE_PURPOSES, SYSTEM, purpose_for
from gateway.auth.scopes import ROLES
from gateway.auth.users import PEOPLE_ROLES
from tests.audit_http.conftest import Auditor, request_ids
from tests.crm_bridge.conftest import full_patient
from tests.http.live import LiveServer


def _purposes(event: dict[str, Any]) -> list[str]:
    out = [c["code"] for p in event.get("purposeOfEvent", []) for c in p["coding"]]
    agent = event["agent"][0]
    assert [c["code"] for p in agent.get("purposeOfUse", []) for c in p["coding"]] == out
    return out


def _events_of(auditor: Auditor, request_id: str) -> list[dict[str, Any]]:
    return [e for e in auditor.events(_sort="-date") if request_id in request_ids(e)]


def test_every_role_has_a_default_it_may_state() -> None:
    assert set(ROLE_PURPOSES) == set(ROLES) | set(PEOPLE_ROLES)  # OAuth clients' roles and people's
    for role, (default, allowed) in ROLE_PURPOSES.items():
        assert default in allowed
        assert purpose_for(role, None) == default
        assert purpose_for(role, f"{SYSTEM}|{default.lower()}") == default
    with pytest.raises(Forbidden) as refused:
        purpose_for("crm", "TREAT")
    assert refused.value.location == HEADER
    with pytest.raises(Forbidden):
        purpose_for("clinician", "HMARKT")
    with pytest.raises(Forbidden):
        purpose_for("clinician", "http://example.org/other|TREAT")
    with pytest.raises(Forbidden):
        purpose_for("nobody", None)


def test_reads_record_the_stated_or_default_purpose(live_server: LiveServer, auditor: Auditor) -> None:
    live = live_server
    created = httpx.post(
        f"{live.fhir_url}/Patient",
        json=full_patient(),
        headers={**live.headers, "Content-Type": "application/fhir+json", HEADER: "HOPERAT"},
    )
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    clinician = live.auth("clinician")
    default = httpx.get(f"{live.fhir_url}/Patient/{pid}", headers=clinician)
    stated = httpx.get(f"{live.fhir_url}/Patient/{pid}", headers={**clinician, HEADER: "ETREAT"})
    search = httpx.get(
        f"{live.fhir_url}/Patient", params={"_id": pid}, headers={**clinician, HEADER: "TREAT"}
    )
    assert default.status_code == stated.status_code == search.status_code == 200
    assert [_purposes(e) for e in _events_of(auditor, created.headers["x-request-id"])] == [["HOPERAT"]]
    assert [_purposes(e) for e in _events_of(auditor, default.headers["x-request-id"])] == [["TREAT"]]
    assert [_purposes(e) for e in _events_of(auditor, stated.headers["x-request-id"])] == [["ETREAT"]]
    assert [_purposes(e) for e in _events_of(auditor, search.headers["x-request-id"])] == [["TREAT"]]
    # the auditor's own search is an access too, with the compliance officer's default
    auditor.live.runtime.audit.flush()
    mine = auditor.http.get("/AuditEvent", params={"_count": "1"})
    assert [_purposes(e) for e in _events_of(auditor, mine.headers["x-request-id"])] == [["HCOMPL"]]


def test_a_purpose_the_role_may_not_state_is_refused(live_server: LiveServer, auditor: Auditor) -> None:
    live = live_server
    refused = httpx.get(f"{live.fhir_url}/Patient", headers={**live.auth("clinician"), HEADER: "HMARKT"})
    assert refused.status_code == 403
    body = refused.json()
    assert body["resourceType"] == "OperationOutcome"
    assert HEADER in body["issue"][0]["diagnostics"]
    assert body["issue"][0]["expression"] == [HEADER]
    events = _events_of(auditor, refused.headers["x-request-id"])
    assert len(events) == 1 and events[0]["outcome"] == "12"
    # the audit API and the privacy API take the header too (the CRM API: tests/crm_bridge)
    audit = httpx.get(
        f"{live.fhir_url}/AuditEvent", headers={**live.auth("compliance_officer"), HEADER: "TREAT"}
    )
    assert audit.status_code == 403 and HEADER in audit.text
    privacy = httpx.get(
        f"{live.base_url}/privacy/v1/requests", headers={**live.auth("privacy_officer"), HEADER: "HMARKT"}
    )
    assert privacy.status_code == 403 and HEADER in privacy.text
