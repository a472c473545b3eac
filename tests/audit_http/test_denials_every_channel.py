"""One principal for every channel: each refusal is audited once, naming who was refused.

A valid token of the wrong role on the FHIR, CRM, re-identification or privacy
API is a 403 whose one denial AuditEvent (outcome 12) names the token's client
id and role; a missing or invalid token is a 401 whose one event names
``unauthenticated``.  Both carry the request id of the request-context
middleware, the one the response echoes in ``X-Request-ID`` (the caller's own
when it sent a sane one), never an id the API minted on its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.audit_http.conftest import Auditor, agent_id, request_ids
from tests.crm_bridge.conftest import CRM_ID, CrmClient, serve_crm
from tests.http.live import LiveServer


@pytest.fixture
def live(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    with serve_crm(database_url, tmp_path) as server:
        yield server


@pytest.fixture
def crm_headers(live: LiveServer) -> Iterator[dict[str, str]]:
    client = CrmClient(live)  # role crm, client id crm-main, configured in the projection
    yield dict(client.http.headers)
    client.http.close()


@pytest.fixture
def auditor(live: LiveServer) -> Iterator[Auditor]:
    a = Auditor(live)
    yield a
    a.http.close()


def _denials_of(auditor: Auditor, response: httpx.Response) -> list[dict[str, Any]]:
    request_id = response.headers["x-request-id"]
    return [e for e in auditor.events(outcome="12") if request_id in request_ids(e)]


def _role(event: dict[str, Any]) -> str:
    return str(event["agent"][0]["role"][0]["coding"][0]["code"])


def _subtype(event: dict[str, Any]) -> str:
    return str(event["subtype"][0]["code"])


def _assert_one_denial(
    auditor: Auditor, response: httpx.Response, status: int, client_id: str, role: str, subtype: str
) -> None:
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    events = _denials_of(auditor, response)
    assert len(events) == 1, events
    assert (agent_id(events[0]), _role(events[0]), _subtype(events[0])) == (client_id, role, subtype)


def _client_id(headers: dict[str, str], live: LiveServer) -> str:
    return live.runtime.tokens.verify(headers["Authorization"].split(" ", 1)[1]).client_id


def test_crm_token_on_privacy_and_fhir_routes(
    live: LiveServer, crm_headers: dict[str, str], auditor: Auditor
) -> None:
    privacy = httpx.get(f"{live.base_url}/privacy/v1/requests", headers=crm_headers)
    _assert_one_denial(auditor, privacy, 403, CRM_ID, "crm", "privacy-api")
    fhir = httpx.get(f"{live.fhir_url}/Patient", headers=crm_headers)
    _assert_one_denial(auditor, fhir, 403, CRM_ID, "crm", "search-type")
    reidentify = httpx.post(
        f"{live.base_url}/crm/v1/reidentify",
        json={"crm": CRM_ID, "pseudonym": "x", "reason": "a reason long enough"},
        headers=crm_headers,
    )
    _assert_one_denial(auditor, reidentify, 403, CRM_ID, "crm", "crm-api")


@pytest.mark.parametrize("role", ["privacy_officer", "patient", "his_integration"])
def test_other_roles_on_the_crm_api_are_named(live: LiveServer, auditor: Auditor, role: str) -> None:
    headers = live.auth(role, patient_id="p-1" if role == "patient" else None)
    response = httpx.get(f"{live.base_url}/crm/v1/changes", headers=headers)
    _assert_one_denial(auditor, response, 403, _client_id(headers, live), role, "crm-api")


def test_unconfigured_crm_client_is_named_on_both_apis(live: LiveServer, auditor: Auditor) -> None:
    headers = live.auth("crm")  # a crm client the projection does not list
    client_id = _client_id(headers, live)
    feed = httpx.get(f"{live.base_url}/crm/v1/changes", headers=headers)
    _assert_one_denial(auditor, feed, 403, client_id, "crm", "crm-api")
    receipt = httpx.post(
        f"{live.base_url}/privacy/v1/erasure-receipts", json={"subject": "k1.x"}, headers=headers
    )
    _assert_one_denial(auditor, receipt, 403, client_id, "crm", "privacy-api")


@pytest.mark.parametrize(
    ("path", "subtype"),
    [
        ("/fhir/Patient", "search-type"),
        ("/crm/v1/changes", "crm-api"),
        ("/privacy/v1/requests", "privacy-api"),
    ],
)
@pytest.mark.parametrize("authorization", [None, "Bearer not-a-token", "Basic abc"])
def test_missing_or_invalid_token_is_unauthenticated(
    live: LiveServer, auditor: Auditor, path: str, subtype: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    response = httpx.get(f"{live.base_url}{path}", headers=headers)
    _assert_one_denial(auditor, response, 401, "unauthenticated", "unknown", subtype)


def test_the_callers_request_id_names_the_event(
    live: LiveServer, crm_headers: dict[str, str], auditor: Auditor
) -> None:
    for url in (f"{live.base_url}/privacy/v1/requests", f"{live.fhir_url}/Patient"):
        response = httpx.get(url, headers={**crm_headers, "X-Request-ID": f"trace-{len(url)}"})
        assert response.headers["x-request-id"] == f"trace-{len(url)}"
        _assert_one_denial(
            auditor, response, 403, CRM_ID, "crm", "privacy-api" if "privacy" in url else "search-type"
        )
    officer = live.auth("privacy_officer")
    response = httpx.get(
        f"{live.base_url}/crm/v1/changes", headers={**officer, "X-Request-ID": "trace-crm-1"}
    )
    assert response.headers["x-request-id"] == "trace-crm-1"
    _assert_one_denial(auditor, response, 403, _client_id(officer, live), "privacy_officer", "crm-api")


def test_allowed_callers_leave_no_denial(
    live: LiveServer, crm_headers: dict[str, str], auditor: Auditor
) -> None:
    feed = httpx.get(f"{live.base_url}/crm/v1/changes", headers=crm_headers)
    own = httpx.get(f"{live.base_url}/privacy/v1/requests", headers=live.auth("privacy_officer"))
    assert (feed.status_code, own.status_code) == (200, 200)
    assert _denials_of(auditor, feed) == [] and _denials_of(auditor, own) == []
