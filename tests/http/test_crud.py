"""Instance and type interactions over real HTTP: headers, versions, conditional writes, history."""

from __future__ import annotations

import time
from email.utils import parsedate_to_datetime

import httpx

from tests.http.conftest import FHIR_JSON, fhir_post, patient


def _create(client: httpx.Client, mrn: str) -> dict[str, object]:
    response = fhir_post(client, "/Patient", patient(mrn))
    assert response.status_code == 201, response.text
    body: dict[str, object] = response.json()
    return body


def test_create_sets_location_etag_last_modified(client: httpx.Client) -> None:
    response = fhir_post(client, "/Patient", patient("MRN-H1"))
    assert response.status_code == 201
    body = response.json()
    pid = body["id"]
    assert response.headers["location"] == f"{str(client.base_url).rstrip('/')}/Patient/{pid}/_history/1"
    assert response.headers["etag"] == 'W/"1"'
    assert response.headers["content-type"].startswith(FHIR_JSON)
    assert body["meta"]["versionId"] == "1"
    modified = parsedate_to_datetime(response.headers["last-modified"])
    assert abs(modified.timestamp() - time.time()) < 60
    read = client.get(f"/Patient/{pid}")
    assert read.status_code == 200
    assert read.headers["etag"] == 'W/"1"'
    assert read.headers["last-modified"] == response.headers["last-modified"]
    assert read.json()["name"][0]["text"] == "Nguyễn Văn An"
    assert client.get(f"/Patient/{pid}", headers={"If-None-Match": 'W/"1"'}).status_code == 304


def test_update_versions_and_if_match(client: httpx.Client) -> None:
    body = _create(client, "MRN-U1")
    pid = body["id"]
    body["gender"] = "female"
    updated = client.put(f"/Patient/{pid}", json=body, headers={"If-Match": 'W/"1"'})
    assert updated.status_code == 200, updated.text
    assert updated.headers["etag"] == 'W/"2"'
    assert updated.json()["gender"] == "female"
    stale = client.put(f"/Patient/{pid}", json=body, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412
    assert stale.json()["resourceType"] == "OperationOutcome"
    assert client.get(f"/Patient/{pid}/_history/1").json()["gender"] == "male"
    assert client.get(f"/Patient/{pid}/_history/2").json()["gender"] == "female"
    assert client.get(f"/Patient/{pid}/_history/3").status_code == 404


def test_update_id_must_match_url(client: httpx.Client) -> None:
    body = _create(client, "MRN-U2")
    wrong = client.put("/Patient/other-id", json=body)
    assert wrong.status_code == 400
    assert wrong.json()["issue"][0]["expression"] == ["Patient.id"]


def test_update_creates_with_client_id(client: httpx.Client) -> None:
    body = patient("MRN-U3", id="client-chosen-1")
    response = client.put("/Patient/client-chosen-1", json=body)
    assert response.status_code == 201
    assert response.headers["location"].endswith("/Patient/client-chosen-1/_history/1")


def test_delete_then_read_is_gone(client: httpx.Client) -> None:
    pid = _create(client, "MRN-D1")["id"]
    deleted = client.delete(f"/Patient/{pid}")
    assert deleted.status_code == 204
    gone = client.get(f"/Patient/{pid}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert client.get("/Patient/never-existed").status_code == 404
    assert client.get(f"/Patient/{pid}/_history/2").status_code == 410
    assert client.get(f"/Patient/{pid}/_history/1").status_code == 200
    search = client.get("/Patient", params={"identifier": "urn:oid:1.2.704.0.1|MRN-D1"}).json()
    assert search["total"] == 0


def test_prefer_return(client: httpx.Client) -> None:
    minimal = fhir_post(client, "/Patient", patient("MRN-P1"), Prefer="return=minimal")
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert minimal.headers["location"]
    oo = fhir_post(client, "/Patient", patient("MRN-P2"), Prefer="return=OperationOutcome")
    assert oo.status_code == 201
    assert oo.json()["resourceType"] == "OperationOutcome"
    assert oo.json()["issue"][0]["severity"] == "information"


def test_conditional_create_returns_existing(client: httpx.Client) -> None:
    first = fhir_post(
        client, "/Patient", patient("MRN-C1"), **{"If-None-Exist": "identifier=urn:oid:1.2.704.0.1|MRN-C1"}
    )
    assert first.status_code == 201
    again = fhir_post(
        client, "/Patient", patient("MRN-C1"), **{"If-None-Exist": "identifier=urn:oid:1.2.704.0.1|MRN-C1"}
    )
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]


def test_conditional_update_and_delete(client: httpx.Client) -> None:
    criteria = {"identifier": "urn:oid:1.2.704.0.1|MRN-CU"}
    created = client.put("/Patient", params=criteria, json=patient("MRN-CU"))
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    changed = client.put("/Patient", params=criteria, json=patient("MRN-CU", gender="other"))
    assert changed.status_code == 200
    assert changed.json()["id"] == pid
    assert changed.headers["etag"] == 'W/"2"'
    assert client.put("/Patient", json=patient("MRN-CU")).status_code == 400
    assert client.delete("/Patient", params=criteria).status_code == 204
    assert client.get(f"/Patient/{pid}").status_code == 410


def test_conditional_delete_with_several_matches_is_412(client: httpx.Client) -> None:
    _create(client, "MRN-M1")
    _create(client, "MRN-M2")
    response = client.delete("/Patient", params={"family": "Nguyen"})
    assert response.status_code == 412


def test_history_instance_type_system(client: httpx.Client) -> None:
    body = _create(client, "MRN-HI")
    pid = body["id"]
    body["active"] = True
    assert client.put(f"/Patient/{pid}", json=body).status_code == 200
    assert client.delete(f"/Patient/{pid}").status_code == 204
    history = client.get(f"/Patient/{pid}/_history")
    assert history.status_code == 200
    bundle = history.json()
    assert bundle["type"] == "history"
    methods = [e["request"]["method"] for e in bundle["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]
    assert "resource" not in bundle["entry"][0]
    assert bundle["entry"][0]["response"]["etag"] == 'W/"3"'
    assert bundle["entry"][2]["response"]["status"] == "201 Created"
    assert bundle["entry"][1]["resource"]["meta"]["versionId"] == "2"
    type_history = client.get("/Patient/_history").json()
    assert len(type_history["entry"]) == 3
    system = client.get("/_history").json()
    assert len(system["entry"]) == 3
    assert client.get("/Patient/unknown-id/_history").status_code == 404


def test_history_count_since_and_next_link(client: httpx.Client) -> None:
    for i in range(5):
        _create(client, f"MRN-HC{i}")
    page = client.get("/Patient/_history", params={"_count": 2}).json()
    assert len(page["entry"]) == 2
    seen = [e["fullUrl"] for e in page["entry"]]
    while True:
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        page = client.get(nxt[0]).json()
        seen += [e["fullUrl"] for e in page["entry"]]
    assert len(seen) == 5 == len(set(seen))
    future = client.get("/_history", params={"_since": "2999-01-01T00:00:00Z"}).json()
    assert "entry" not in future
    past = client.get("/_history", params={"_since": "2000-01-01"}).json()
    assert len(past["entry"]) == 5
    assert client.get("/_history", params={"_since": "yesterday"}).status_code == 400


def test_read_elements_subset(client: httpx.Client) -> None:
    pid = _create(client, "MRN-E1")["id"]
    subset = client.get(f"/Patient/{pid}", params={"_elements": "gender"}).json()
    assert set(subset) == {"resourceType", "id", "meta", "gender"}
    assert subset["meta"]["tag"][0]["code"] == "SUBSETTED"
