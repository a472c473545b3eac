"""Every failure is an OperationOutcome with the right status, and nothing is stored."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.http.conftest import FHIR_JSON, fhir_post, patient

MRN = "urn:oid:1.2.704.0.1|MRN-BAD"


def _issue(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue: dict[str, Any] = body["issue"][0]
    assert issue["severity"] == "error"
    return issue


def _nothing_stored(client: httpx.Client) -> None:
    assert client.get("/Patient", params={"identifier": MRN}).json()["total"] == 0
    assert client.get("/Patient", params={"_summary": "count"}).json()["total"] == 0


@pytest.mark.parametrize(
    ("body", "status", "expression"),
    [
        ({**patient("MRN-BAD"), "resourceType": "Encounter"}, 400, "Patient.resourceType"),
        (patient("MRN-BAD", birthDate="1985-13-45"), 400, "Patient.birthDate"),
        (patient("MRN-BAD", favouriteColour="blue"), 400, "Patient.favouriteColour"),
        (patient("MRN-BAD", gender="robot"), 400, "Patient.gender"),
        (patient("MRN-BAD", name=[{"family": 42}]), 400, "Patient.name[0].family"),
    ],
    ids=["wrong-resourceType", "bad-date", "unknown-element", "bad-code", "wrong-type"],
)
def test_invalid_resource(client: httpx.Client, body: dict[str, Any], status: int, expression: str) -> None:
    response = fhir_post(client, "/Patient", body)
    assert response.status_code == status, response.text
    issue = _issue(response)
    assert issue["expression"] == [expression]
    assert issue["code"] == "invalid"
    _nothing_stored(client)


def test_invalid_update_keeps_old_version(client: httpx.Client) -> None:
    created = fhir_post(client, "/Patient", patient("MRN-KEEP")).json()
    bad = {**created, "birthDate": "not-a-date"}
    response = client.put(f"/Patient/{created['id']}", json=bad)
    assert response.status_code == 400
    assert _issue(response)["expression"] == ["Patient.birthDate"]
    assert client.get(f"/Patient/{created['id']}").headers["etag"] == 'W/"1"'


@pytest.mark.parametrize(
    "raw", [b"{not json", b"", b"[1, 2]", b"\xff\xfe"], ids=["broken", "empty", "array", "binary"]
)
def test_non_json_body(client: httpx.Client, raw: bytes) -> None:
    response = client.post("/Patient", content=raw, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 400
    assert _issue(response)["code"] == "invalid"
    _nothing_stored(client)


def test_five_megabyte_body_is_413(client: httpx.Client) -> None:
    huge = patient("MRN-BAD", name=[{"family": "x" * (5 * 1024 * 1024)}])
    response = fhir_post(client, "/Patient", huge)
    assert response.status_code == 413
    assert _issue(response)["code"] == "too-costly"
    _nothing_stored(client)


def test_chunked_oversized_body_is_413(client: httpx.Client) -> None:
    def chunks() -> Any:
        yield b'{"resourceType":"Patient","name":[{"family":"'
        for _ in range(5 * 1024):
            yield b"y" * 1024
        yield b'"}]}'

    response = client.post("/Patient", content=chunks(), headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 413
    _nothing_stored(client)


def test_wrong_media_types(client: httpx.Client) -> None:
    xml = client.post("/Patient", content=b"<Patient/>", headers={"Content-Type": "application/fhir+xml"})
    assert xml.status_code == 415
    assert _issue(xml)["code"] == "not-supported"
    assert client.get("/metadata", headers={"Accept": "application/fhir+xml"}).status_code == 406
    assert client.get("/metadata", params={"_format": "xml"}).status_code == 406
    assert client.get("/metadata", headers={"Accept": "application/json"}).status_code == 200
    assert client.get("/metadata", headers={"Accept": "text/html, */*;q=0.8"}).status_code == 200
    plain_json = client.post(
        "/Patient", content=b'{"resourceType":"Patient"}', headers={"Content-Type": "application/json"}
    )
    assert plain_json.status_code == 201
    form = client.post("/Patient/_search", content=b"<x/>", headers={"Content-Type": "text/xml"})
    assert form.status_code == 415


def test_not_found_and_method_not_allowed(client: httpx.Client) -> None:
    assert _issue(client.get("/Patient/does-not-exist"))["code"] == "not-found"
    unknown_type = client.get("/Spaceship/1")
    assert unknown_type.status_code == 404
    assert _issue(unknown_type)
    unknown_route = client.get("/Patient/1/_history/1/extra")
    assert unknown_route.status_code == 404
    assert _issue(unknown_route)
    patch = client.patch("/Patient/1", json={})
    assert patch.status_code == 405
    assert _issue(patch)["code"] == "not-supported"
    post_to_instance = fhir_post(client, "/Patient/1", patient("X"))
    assert post_to_instance.status_code == 405
    assert client.get("/Encounter/1/$everything").status_code == 405


def test_search_errors(client: httpx.Client) -> None:
    unknown = client.get("/Patient", params={"colour": "blue"})
    assert unknown.status_code == 400
    assert _issue(unknown)["expression"] == ["colour"]
    assert client.get("/Patient", params={"birthdate": "gt-last-week"}).status_code == 400
    assert client.get("/Patient", params={"_sort": "favourite"}).status_code == 400
    assert client.get("/Patient", params={"_count": "many"}).status_code == 400
    expired = client.get("/Patient", params={"_page_token": "nope", "_offset": "20"})
    assert expired.status_code == 400


def test_duplicate_identifier_is_409(client: httpx.Client) -> None:
    assert fhir_post(client, "/Patient", patient("MRN-DUP")).status_code == 201
    duplicate = fhir_post(client, "/Patient", patient("MRN-DUP"))
    assert duplicate.status_code == 409
    assert _issue(duplicate)["code"] == "conflict"


def test_error_has_request_id(client: httpx.Client) -> None:
    response = client.get("/Patient/missing", headers={"X-Request-ID": "trace-123"})
    assert response.headers["x-request-id"] == "trace-123"
    generated = client.get("/Patient/missing", headers={"X-Request-ID": "bad id with spaces"})
    assert generated.headers["x-request-id"] != "bad id with spaces"
    assert len(generated.headers["x-request-id"]) == 32


def test_framework_validation_errors_become_400_outcomes() -> None:
    """FastAPI's own 422 (request validation) is a client error in FHIR terms: 400 OperationOutcome."""
    import asyncio
    import json

    from fastapi.exceptions import RequestValidationError
    from starlette.requests import Request

    from gateway.http.errors import _validation_error

    exc = RequestValidationError([{"loc": ("query", "_count"), "msg": "Input should be a valid integer"}])
    request = Request({"type": "http", "method": "GET", "path": "/fhir/Patient", "headers": []})
    response = asyncio.run(_validation_error(request, exc))
    assert response.status_code == 400
    body = json.loads(bytes(response.body))
    assert body["issue"][0]["expression"] == ["query._count"]
    assert body["issue"][0]["code"] == "invalid"


def test_count_zero_has_no_paging_loop(client: httpx.Client) -> None:
    for i in range(3):
        assert fhir_post(client, "/Patient", patient(f"MRN-Z{i}")).status_code == 201
    bundle = client.get("/Patient", params={"_count": "0"}).json()
    assert "entry" not in bundle
    assert all(link["relation"] != "next" for link in bundle["link"])
    assert client.get("/Patient/x/_history/abc").status_code == 404
