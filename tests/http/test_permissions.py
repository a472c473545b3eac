"""Permission matrix: each role x each interaction over real HTTP with real tokens (deny by default)."""

from __future__ import annotations

import httpx
import pytest

from tests.http.conftest import FHIR_JSON, LiveServer, fhir_post, patient

ROLES = ("his_integration", "clinician", "compliance_officer", "crm", "admin")
# interaction -> roles allowed
ALLOWED = {
    "create": {"his_integration"},
    "read": {"his_integration", "clinician"},
    "search": {"his_integration", "clinician"},
    "update": {"his_integration"},
    "delete": {"his_integration"},
    "history": {"his_integration", "clinician"},
    "transaction": {"his_integration"},
}


def _call(http: httpx.Client, interaction: str, pid: str, n: int) -> httpx.Response:
    if interaction == "create":
        return fhir_post(http, "/Patient", patient(f"PERM-C{n}"))
    if interaction == "read":
        return http.get(f"/Patient/{pid}")
    if interaction == "search":
        return http.get("/Patient", params={"gender": "male"})
    if interaction == "update":
        return http.put(
            f"/Patient/{pid}",
            json=patient("PERM-0", id=pid, gender="other"),
            headers={"Content-Type": FHIR_JSON},
        )
    if interaction == "delete":
        return http.delete(f"/Patient/{pid}")
    if interaction == "history":
        return http.get(f"/Patient/{pid}/_history")
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": patient(f"PERM-T{n}"), "request": {"method": "POST", "url": "Patient"}}],
    }
    return fhir_post(http, "", bundle)


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(live_server: LiveServer, client: httpx.Client, role: str) -> None:
    headers = {"Accept": FHIR_JSON, **live_server.auth(role)}
    with httpx.Client(base_url=live_server.fhir_url, headers=headers, timeout=30) as http:
        for n, interaction in enumerate(ALLOWED):
            pid = fhir_post(client, "/Patient", patient(f"PERM-{role}-{n}")).json()["id"]
            response = _call(http, interaction, pid, n)
            if role in ALLOWED[interaction]:
                assert response.status_code < 400, (role, interaction, response.text)
            else:
                assert response.status_code == 403, (role, interaction, response.status_code)
                issue = response.json()["issue"][0]
                assert issue["code"] == "forbidden" and issue["diagnostics"]


def test_no_or_bad_token_is_401(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.fhir_url, timeout=30) as http:
        missing = http.get("/Patient")
        assert missing.status_code == 401 and missing.json()["issue"][0]["code"] == "login"
        forged = http.get("/Patient", headers={"Authorization": "Bearer not.a.jwt"})
        assert forged.status_code == 401
        assert http.get("/metadata").status_code == 200  # the CapabilityStatement stays public


def test_scope_narrower_than_role_is_enforced(live_server: LiveServer, client: httpx.Client) -> None:
    pid = fhir_post(client, "/Patient", patient("PERM-NARROW")).json()["id"]
    headers = live_server.auth("his_integration", "system/Patient.rs")
    with httpx.Client(base_url=live_server.fhir_url, headers=headers, timeout=30) as http:
        assert http.get(f"/Patient/{pid}").status_code == 200
        denied = fhir_post(http, "/Patient", patient("PERM-NARROW-2"))
        assert denied.status_code == 403 and "Patient.c" in denied.json()["issue"][0]["diagnostics"]
        # a transaction touching a type outside the scopes is refused whole
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {"resource": patient("PERM-NARROW-3"), "request": {"method": "POST", "url": "Patient"}}
            ],
        }
        assert fhir_post(http, "", bundle).status_code == 403
    assert client.get("/Patient", params={"identifier": "PERM-NARROW-3"}).json().get("total") == 0


def test_patient_token_sees_only_own_compartment(live_server: LiveServer, client: httpx.Client) -> None:
    mine = fhir_post(client, "/Patient", patient("PERM-MINE")).json()["id"]
    other = fhir_post(client, "/Patient", patient("PERM-OTHER")).json()["id"]
    headers = live_server.auth("patient", patient_id=mine)
    with httpx.Client(base_url=live_server.fhir_url, headers=headers, timeout=30) as http:
        assert http.get(f"/Patient/{mine}").status_code == 200
        # 404, as for an unknown id (issue #16 item 8: a 403 told which ids exist)
        assert http.get(f"/Patient/{other}").status_code == 404
        found = http.get("/Patient").json()
        assert [e["resource"]["id"] for e in found.get("entry", [])] == [mine]
        assert fhir_post(http, "/Patient", patient("PERM-P")).status_code == 403
