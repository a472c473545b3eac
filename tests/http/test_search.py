"""Search over real HTTP: modifiers, prefixes, sorting, includes, paging, totals, subsetting."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.http.conftest import patient

SYS = "urn:oid:1.2.704.0.1"


def _ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


def _link(bundle: dict[str, Any], relation: str) -> str | None:
    return next((link["url"] for link in bundle.get("link", []) if link["relation"] == relation), None)


def _put(client: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    response = client.put(f"/{resource['resourceType']}/{resource['id']}", json=resource)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def people(client: httpx.Client) -> dict[str, str]:
    """Three patients, two encounters of An, one appointment of Bình."""
    data: list[tuple[str, str, list[str], str, dict[str, Any]]] = [
        (
            "an",
            "Nguyễn",
            ["Văn", "An"],
            "1985-03-12",
            {"telecom": [{"system": "phone", "value": "+84912345678"}]},
        ),
        ("binh", "Trần", ["Thị", "Bình"], "1990-07-01", {}),
        (
            "cuong",
            "Lê",
            ["Cường"],
            "2001-12-31",
            {"telecom": [{"system": "email", "value": "cuong@example.vn"}]},
        ),
    ]
    for pid, family, given, born, extra in data:
        body = patient(
            f"MRN-{pid}", id=pid, birthDate=born, name=[{"family": family, "given": given}], **extra
        )
        _put(client, body)
    for eid, day in (("enc-1", "2024-01-05"), ("enc-2", "2024-03-10")):
        _put(
            client,
            {
                "resourceType": "Encounter",
                "id": eid,
                "status": "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                "subject": {"reference": "Patient/an"},
                "period": {"start": f"{day}T08:00:00+07:00", "end": f"{day}T09:00:00+07:00"},
            },
        )
    _put(
        client,
        {
            "resourceType": "Appointment",
            "id": "appt-1",
            "status": "booked",
            "start": "2024-06-01T09:00:00+07:00",
            "end": "2024-06-01T09:30:00+07:00",
            "participant": [{"actor": {"reference": "Patient/binh"}, "status": "accepted"}],
        },
    )
    return {"an": "an", "binh": "binh", "cuong": "cuong"}


def test_identifier_and_tokens(client: httpx.Client, people: dict[str, str]) -> None:
    bundle = client.get("/Patient", params={"identifier": f"{SYS}|MRN-an"}).json()
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 1
    assert _ids(bundle) == ["an"]
    assert bundle["entry"][0]["fullUrl"].endswith("/fhir/Patient/an")
    assert _ids(client.get("/Patient", params={"identifier": "MRN-binh"}).json()) == ["binh"]
    assert _ids(client.get("/Patient", params={"phone": "0912345678"}).json()) == ["an"]
    assert _ids(client.get("/Patient", params={"email": "cuong@example.vn"}).json()) == ["cuong"]
    assert _ids(client.get("/Encounter", params={"class": "AMB", "_sort": "_id"}).json()) == [
        "enc-1",
        "enc-2",
    ]


def test_string_modifiers(client: httpx.Client, people: dict[str, str]) -> None:
    assert _ids(client.get("/Patient", params={"family": "nguyen"}).json()) == ["an"]
    assert _ids(client.get("/Patient", params={"family:exact": "Nguyễn"}).json()) == ["an"]
    assert _ids(client.get("/Patient", params={"family:exact": "nguyễn"}).json()) == []
    assert _ids(client.get("/Patient", params={"given:contains": "inh"}).json()) == ["binh"]
    assert _ids(client.get("/Patient", params={"name": "Tran,Le", "_sort": "_id"}).json()) == [
        "binh",
        "cuong",
    ]


def test_date_prefixes_and_sort(client: httpx.Client, people: dict[str, str]) -> None:
    def born(value: str) -> list[str]:
        return _ids(client.get("/Patient", params={"birthdate": value, "_sort": "birthdate"}).json())

    assert born("1985-03-12") == ["an"]
    assert born("1985") == ["an"]
    assert born("gt1990-01-01") == ["binh", "cuong"]
    assert born("lt1990-07-01") == ["an"]
    assert born("le1990-07-01") == ["an", "binh"]
    assert born("ge2001-12-31") == ["cuong"]
    assert born("ne1990-07-01") == ["an", "cuong"]
    desc = _ids(client.get("/Patient", params={"_sort": "-birthdate"}).json())
    assert desc == ["cuong", "binh", "an"]
    latest_first = _ids(client.get("/Patient", params={"_sort": "-_lastUpdated"}).json())
    assert latest_first == ["cuong", "binh", "an"]
    encounters = client.get("/Encounter", params={"date": "ge2024-02-01", "_sort": "-date"}).json()
    assert _ids(encounters) == ["enc-2"]
    assert _ids(client.get("/Encounter", params={"_sort": "-date"}).json()) == ["enc-2", "enc-1"]
    assert _ids(client.get("/Appointment", params={"date": "2024-06-01"}).json()) == ["appt-1"]


def test_missing_modifier(client: httpx.Client, people: dict[str, str]) -> None:
    assert _ids(client.get("/Patient", params={"phone:missing": "true", "_sort": "_id"}).json()) == [
        "binh",
        "cuong",
    ]
    assert _ids(client.get("/Patient", params={"phone:missing": "false"}).json()) == ["an"]


def test_include_and_revinclude(client: httpx.Client, people: dict[str, str]) -> None:
    encounters = client.get("/Encounter", params={"_include": "Encounter:subject", "_sort": "_id"}).json()
    assert _ids(encounters) == ["enc-1", "enc-2"]
    assert _ids(encounters, "include") == ["an"]
    appointments = client.get("/Appointment", params={"_include": "Appointment:actor"}).json()
    assert _ids(appointments, "include") == ["binh"]
    patients = client.get("/Patient", params={"_id": "an", "_revinclude": "Encounter:subject"}).json()
    assert _ids(patients) == ["an"]
    assert sorted(_ids(patients, "include")) == ["enc-1", "enc-2"]
    assert patients["total"] == 1
    assert client.get("/Patient", params={"_include": "Patient:organization"}).status_code == 400


def test_summary_count_total_and_elements(client: httpx.Client, people: dict[str, str]) -> None:
    count = client.get("/Patient", params={"_summary": "count"}).json()
    assert count["total"] == 3
    assert "entry" not in count
    accurate = client.get("/Patient", params={"_count": 1, "_total": "accurate"}).json()
    assert accurate["total"] == 3
    assert len(accurate["entry"]) == 1
    subset = client.get("/Patient", params={"_id": "an", "_elements": "birthDate,gender"}).json()
    resource = subset["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "birthDate", "gender"}
    assert any(tag["code"] == "SUBSETTED" for tag in resource["meta"]["tag"])
    summary = client.get("/Patient", params={"_id": "an", "_summary": "true"}).json()
    assert "name" in summary["entry"][0]["resource"]


def test_post_search(client: httpx.Client, people: dict[str, str]) -> None:
    response = client.post(
        "/Patient/_search",
        content=f"identifier={SYS}%7CMRN-cuong".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200
    assert _ids(response.json()) == ["cuong"]


def test_paging_links_survive_concurrent_insert(client: httpx.Client) -> None:
    for i in range(7):
        _put(client, patient(f"MRN-PG{i}", id=f"pg-{i}", name=[{"family": "Phạm"}]))
    first = client.get("/Patient", params={"family": "Pham", "_count": 3, "_sort": "_id"}).json()
    assert first["total"] == 7
    assert _ids(first) == ["pg-0", "pg-1", "pg-2"]
    assert _link(first, "previous") is None
    # A write that would shift offset-based pages: sorts before everything else.
    _put(client, patient("MRN-PGX", id="pg-00", name=[{"family": "Phạm"}]))
    seen = _ids(first)
    page = first
    while (next_url := _link(page, "next")) is not None:
        page = client.get(next_url).json()
        seen += _ids(page)
    assert seen == [f"pg-{i}" for i in range(7)]
    assert _link(page, "previous") is not None
    back = client.get(str(_link(page, "previous"))).json()
    assert _ids(back) == ["pg-3", "pg-4", "pg-5"]
    fresh = client.get("/Patient", params={"family": "Pham", "_count": 3, "_sort": "_id"}).json()
    assert fresh["total"] == 8


def test_everything(client: httpx.Client, people: dict[str, str]) -> None:
    bundle = client.get("/Patient/an/$everything").json()
    assert bundle["type"] == "searchset"
    kinds = sorted(f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"])
    assert kinds == ["Encounter/enc-1", "Encounter/enc-2", "Patient/an"]
    assert bundle["total"] == 3
    binh = client.get("/Patient/binh/$everything").json()
    assert sorted(e["resource"]["id"] for e in binh["entry"]) == ["appt-1", "binh"]
    assert client.get("/Patient/nobody/$everything").status_code == 404
    assert client.delete("/Patient/cuong").status_code == 204
    assert client.get("/Patient/cuong/$everything").status_code == 410
