"""Paging links over real HTTP (issue #16 items 4 and 8), on SQLite and PostgreSQL.

The attacks: a clinician's ``_page_token`` replayed with a patient's token or
with other search parameters; a spoofed Host header steering paging links; a
huge history ``_page_token``.  Each must now fail.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx

from tests.audit_http.conftest import Auditor, request_ids
from tests.http.conftest import FHIR_JSON, LiveServer, fhir_post, patient
from tests.http.live import serve


def _links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle.get("link", [])}


def _params(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query)


def _six_women(client: httpx.Client, tag: str) -> list[str]:
    return [
        fhir_post(client, "/Patient", patient(f"{tag}-{n}", gender="female")).json()["id"] for n in range(6)
    ]


def _outcome_404(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "not-found"
    assert "entry" not in body


def test_a_clinicians_page_token_replayed_by_a_patient_is_404(
    live_server: LiveServer, client: httpx.Client
) -> None:
    _six_women(client, "PT-REPLAY")
    mine = fhir_post(client, "/Patient", patient("PT-MINE", gender="female")).json()["id"]
    clinician = {"Accept": FHIR_JSON, **live_server.auth("clinician")}
    first = httpx.get(
        f"{live_server.fhir_url}/Patient", params={"gender": "female", "_count": "2"}, headers=clinician
    ).json()
    next_url = _links(first)["next"]
    assert "_page_token" in next_url
    owner = httpx.get(next_url, headers=clinician)
    assert owner.status_code == 200 and len(owner.json()["entry"]) == 2

    patient_token = {"Accept": FHIR_JSON, **live_server.auth("patient", patient_id=mine)}
    replayed = httpx.get(next_url, headers=patient_token)
    _outcome_404(replayed)
    another_clinician = {"Accept": FHIR_JSON, **live_server.auth("clinician")}
    _outcome_404(httpx.get(next_url, headers=another_clinician))

    # the refusal is a denial in the audit trail, with its reason, the token not in clear
    auditor = Auditor(live_server)
    try:
        events = auditor.events(outcome="12")
        mine_events = [e for e in events if replayed.headers["x-request-id"] in request_ids(e)]
        assert len(mine_events) == 1
        token = dict(_params(next_url))["_page_token"]
        assert token not in str(auditor.events())
    finally:
        auditor.http.close()


def test_the_same_page_token_with_other_search_parameters_is_404(
    live_server: LiveServer, client: httpx.Client
) -> None:
    _six_women(client, "PT-PARAMS")
    first = client.get("/Patient", params={"gender": "female", "_count": "2"}).json()
    params = _params(_links(first)["next"])
    token = dict(params)["_page_token"]
    assert client.get("/Patient", params=urlencode(params)).status_code == 200
    widened = [(k, "male" if k == "gender" else v) for k, v in params]
    _outcome_404(client.get("/Patient", params=urlencode(widened)))
    dropped = [(k, v) for k, v in params if k != "gender"]
    _outcome_404(client.get("/Patient", params=urlencode(dropped)))
    _outcome_404(client.get("/Encounter", params={"_page_token": token, "_offset": "2"}))


def test_a_patient_pages_through_their_own_compartment(live_server: LiveServer, client: httpx.Client) -> None:
    mine = fhir_post(client, "/Patient", patient("PT-OWN")).json()["id"]
    for n in range(3):
        visit = {
            "resourceType": "Encounter",
            "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": f"Patient/{mine}"},
        }
        assert fhir_post(client, "/Encounter", visit).status_code == 201, n
    own = {"Accept": FHIR_JSON, **live_server.auth("patient", patient_id=mine)}
    seen: list[str] = []
    url: str | None = f"{live_server.fhir_url}/Encounter?_count=2"
    while url:
        page = httpx.get(url, headers=own)
        assert page.status_code == 200, page.text
        seen += [e["resource"]["id"] for e in page.json().get("entry", [])]
        url = _links(page.json()).get("next")
    assert len(seen) == len(set(seen)) == 3


def test_a_huge_history_page_token_is_400(client: httpx.Client) -> None:
    pid = fhir_post(client, "/Patient", patient("PT-HUGE")).json()["id"]
    for value in ("9223372036854775808", str(10**30), "-1"):
        for path in (f"/Patient/{pid}/_history", "/Patient/_history", "/_history"):
            response = client.get(path, params={"_page_token": value})
            assert response.status_code == 400, (path, value, response.text)
            issue = response.json()["issue"][0]
            assert issue["code"] == "invalid" and issue["expression"] == ["_page_token"]
    assert client.get("/_history", params={"_page_token": str(2**63 - 1)}).status_code == 200


# -- links: the configured base URL, never the Host header ---------------------------------------


def _all_urls(bundle: dict[str, Any]) -> list[str]:
    return [*_links(bundle).values(), *(e["fullUrl"] for e in bundle.get("entry", []))]


def test_a_spoofed_host_header_does_not_change_links(database_url: str) -> None:
    base = "https://fhir.benhvien.example/fhir"
    with serve(database_url, base_url=base) as live:
        headers = {"Accept": FHIR_JSON, **live.headers, "Host": "attacker.example"}
        with httpx.Client(base_url=live.fhir_url, headers=headers, timeout=30) as spoofed:
            _six_women(spoofed, "PT-HOST")
            created = fhir_post(spoofed, "/Patient", patient("PT-HOST-LOC"))
            assert created.headers["location"].startswith(f"{base}/Patient/")
            bundle = spoofed.get("/Patient", params={"gender": "female", "_count": "2"}).json()
            urls = _all_urls(bundle)
            assert {"self", "next"} <= set(_links(bundle)) and len(urls) == 4
            assert all(u.startswith(f"{base}/") for u in urls), urls
            history = spoofed.get("/_history", params={"_count": "1"}).json()
            assert all(u.startswith(f"{base}/") for u in _all_urls(history))
            assert spoofed.get("/metadata").json()["implementation"]["url"] == base


def test_without_a_base_url_only_allowed_hosts_are_reflected(
    live_server: LiveServer, client: httpx.Client
) -> None:
    _six_women(client, "PT-ALLOWED")
    for host in (
        "attacker.example",
        "attacker.example:80",
        "localhost.attacker.example",
        "127.0.0.1@evil",
        "",
    ):
        refused = client.get("/Patient", params={"_count": "2"}, headers={"Host": host})
        assert refused.status_code == 400, (host, refused.text)
        assert refused.json()["issue"][0]["expression"] == ["Host"]
    # a write with a refused Host changes nothing (its Location would have been refused)
    spoofed = fhir_post(client, "/Patient", patient("PT-ALLOWED-W"), Host="attacker.example")
    assert spoofed.status_code == 400
    assert client.get("/Patient", params={"identifier": "PT-ALLOWED-W"}).json()["total"] == 0
    port = urlsplit(live_server.base_url).port
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
        bundle = client.get("/Patient", params={"_count": "2"}, headers={"Host": host}).json()
        assert all(u.startswith(f"http://{host}/fhir/") for u in _all_urls(bundle)), host


def test_the_allowed_hosts_setting_replaces_the_loopback_names(database_url: str) -> None:
    with serve(database_url, http_allowed_hosts="carebridge.benhvien.internal") as live:
        headers = {"Accept": FHIR_JSON, **live.headers}
        with httpx.Client(base_url=live.fhir_url, headers=headers, timeout=30) as http:
            named = http.get("/Patient", headers={"Host": "carebridge.benhvien.internal:8443"})
            assert _links(named.json())["self"].startswith("http://carebridge.benhvien.internal:8443/fhir/")
            assert http.get("/Patient").status_code == 400  # 127.0.0.1 is no longer listed
