"""batch and transaction Bundles: atomicity, urn:uuid resolution, conditional entries, GET entries."""

from __future__ import annotations

from typing import Any

import httpx

from tests.http.conftest import fhir_post, patient

SYS = "urn:oid:1.2.704.0.1"


def _count(client: httpx.Client, resource_type: str) -> int:
    total: int = client.get(f"/{resource_type}", params={"_summary": "count"}).json()["total"]
    return total


def _transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def _patient_entry(mrn: str, urn: str, **fields: Any) -> dict[str, Any]:
    return {
        "fullUrl": urn,
        "resource": patient(mrn, **fields),
        "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={SYS}|{mrn}"},
    }


def _encounter_entry(subject: str) -> dict[str, Any]:
    return {
        "resource": {
            "resourceType": "Encounter",
            "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
            "subject": {"reference": subject},
        },
        "request": {"method": "POST", "url": "Encounter"},
    }


def test_transaction_resolves_urn_uuid(client: httpx.Client) -> None:
    urn = "urn:uuid:6f1c2b1e-6c4c-4c39-9d5e-2f1b2b7f0a01"
    bundle = _transaction(_patient_entry("MRN-T1", urn), _encounter_entry(urn))
    response = fhir_post(client, "", bundle)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == ["201 Created", "201 Created"]
    location = result["entry"][0]["response"]["location"]
    assert location.startswith("Patient/") and location.endswith("/_history/1")
    assert result["entry"][0]["response"]["etag"] == 'W/"1"'
    patient_id = location.split("/")[1]
    encounter = result["entry"][1]["resource"]
    assert encounter["subject"]["reference"] == f"Patient/{patient_id}"
    again = fhir_post(client, "", bundle).json()
    assert again["entry"][0]["response"]["status"] == "200 OK"
    assert again["entry"][1]["resource"]["subject"]["reference"] == f"Patient/{patient_id}"
    assert _count(client, "Patient") == 1


def test_transaction_is_atomic(client: httpx.Client) -> None:
    urn = "urn:uuid:0b6d0f4e-8a70-4d4c-9d0e-5c3f1f0f0a02"
    bad = _encounter_entry(urn)
    bad["resource"]["status"] = "not-a-status"
    response = fhir_post(client, "", _transaction(_patient_entry("MRN-T2", urn), bad))
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert issue["expression"] == ["Bundle.entry[1].resource.status"]
    assert _count(client, "Patient") == 0
    assert _count(client, "Encounter") == 0


def test_transaction_failing_in_the_store_writes_nothing(client: httpx.Client) -> None:
    existing = fhir_post(client, "", _transaction(_patient_entry("MRN-T3", "urn:uuid:a"))).json()
    pid = existing["entry"][0]["response"]["location"].split("/")[1]
    stale_update = {
        "resource": patient("MRN-T3", id=pid, gender="female"),
        "request": {"method": "PUT", "url": f"Patient/{pid}", "ifMatch": 'W/"7"'},
    }
    response = fhir_post(client, "", _transaction(_patient_entry("MRN-T4", "urn:uuid:b"), stale_update))
    assert response.status_code == 412
    assert _count(client, "Patient") == 1
    unresolved = fhir_post(client, "", _transaction(_encounter_entry("urn:uuid:nowhere")))
    assert unresolved.status_code == 400
    assert _count(client, "Encounter") == 0


def test_transaction_get_entries_answered_after_writes(client: httpx.Client) -> None:
    bundle = _transaction(
        {"request": {"method": "GET", "url": f"Patient?identifier={SYS}|MRN-T5"}},
        _patient_entry("MRN-T5", "urn:uuid:c"),
    )
    result = fhir_post(client, "", bundle).json()
    search = result["entry"][0]["resource"]
    assert search["type"] == "searchset"
    assert search["total"] == 1
    assert result["entry"][0]["response"]["status"] == "200 OK"
    bad_get = _transaction(
        {"request": {"method": "GET", "url": "Patient?colour=red"}}, _patient_entry("MRN-T6", "urn:uuid:d")
    )
    assert fhir_post(client, "", bad_get).status_code == 400
    assert _count(client, "Patient") == 1


def test_batch_entries_fail_on_their_own(client: httpx.Client) -> None:
    created = fhir_post(client, "/Patient", patient("MRN-B0")).json()
    bundle = _transaction(
        {"resource": patient("MRN-B1"), "request": {"method": "POST", "url": "Patient"}},
        {
            "resource": patient("MRN-B2", birthDate="31/12/1990"),
            "request": {"method": "POST", "url": "Patient"},
        },
        {"request": {"method": "GET", "url": f"Patient/{created['id']}"}},
        {"request": {"method": "GET", "url": "Patient/missing"}},
        {"request": {"method": "DELETE", "url": f"Patient/{created['id']}"}},
        {"request": {"method": "PATCH", "url": "Patient/x"}},
        kind="batch",
    )
    response = fhir_post(client, "", bundle, Prefer="return=representation")
    assert response.status_code == 200
    result = response.json()
    assert result["type"] == "batch-response"
    statuses = [e["response"]["status"] for e in result["entry"]]
    assert statuses == [
        "201 Created",
        "400 Bad Request",
        "410 Gone",
        "404 Not Found",
        "200 OK",
        "405 Method Not Allowed",
    ]
    outcome = result["entry"][1]["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[1].resource.birthDate"]
    assert _count(client, "Patient") == 1


def test_bundle_shape_errors(client: httpx.Client) -> None:
    assert fhir_post(client, "", patient("X")).status_code == 400
    assert fhir_post(client, "", {"resourceType": "Bundle", "type": "collection"}).status_code == 400
    empty = fhir_post(client, "", {"resourceType": "Bundle", "type": "transaction"})
    assert empty.status_code == 200
    assert empty.json()["type"] == "transaction-response"


def test_transaction_conditional_update_and_delete_entries(client: httpx.Client) -> None:
    criteria = f"identifier={SYS}|MRN-T7"
    bundle = _transaction(
        {"resource": patient("MRN-T7"), "request": {"method": "PUT", "url": f"Patient?{criteria}"}},
        {"resource": patient("MRN-T8"), "request": {"method": "POST", "url": "Patient"}},
    )
    first = fhir_post(client, "", bundle).json()
    assert [e["response"]["status"] for e in first["entry"]] == ["201 Created", "201 Created"]
    second = _transaction(
        {
            "resource": patient("MRN-T7", gender="female"),
            "request": {"method": "PUT", "url": f"Patient?{criteria}"},
        },
        {"request": {"method": "DELETE", "url": f"Patient?identifier={SYS}|MRN-T8"}},
    )
    result = fhir_post(client, "", second).json()
    assert [e["response"]["status"] for e in result["entry"]] == ["200 OK", "200 OK"]
    assert result["entry"][0]["response"]["etag"] == 'W/"2"'
    assert _count(client, "Patient") == 1
