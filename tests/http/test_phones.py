"""Phones over REST follow the one phone rule (common.phones): stored in E.164, found by any spelling.

DESIGN §3: ``0912 000 111`` is stored as ``+84912000111`` with the text as
typed kept in the original-text extension, and a search by any spelling of
the number (local, international, with or without ``+`` or ``00``) finds it.
Runs over real HTTP on SQLite and PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from common.phones import ORIGINAL_TEXT_URL
from tests.http.conftest import fhir_post, patient

TYPED = "0912 000 111"
E164 = "+84912000111"


def _phone(resource: dict[str, Any]) -> dict[str, Any]:
    phones: list[dict[str, Any]] = [t for t in resource["telecom"] if t["system"] == "phone"]
    assert len(phones) == 1
    return phones[0]


def _found(client: httpx.Client, query: str | dict[str, str]) -> list[str]:
    if isinstance(query, str):
        response = client.get(f"/Patient?{query}")
    else:
        response = client.get("/Patient", params=query)
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", [])]


@pytest.fixture
def created(client: httpx.Client) -> dict[str, Any]:
    body = patient("MRN-PHONE-1", telecom=[{"system": "phone", "value": TYPED, "use": "mobile"}])
    response = fhir_post(client, "/Patient", body)
    assert response.status_code == 201, response.text
    stored: dict[str, Any] = response.json()
    return stored


def test_rest_phone_is_stored_in_e164_with_the_original_kept(
    client: httpx.Client, created: dict[str, Any]
) -> None:
    expected = {
        "system": "phone",
        "value": E164,
        "use": "mobile",
        "extension": [{"url": ORIGINAL_TEXT_URL, "valueString": TYPED}],
    }
    assert _phone(created) == expected
    read = client.get(f"/Patient/{created['id']}")
    assert read.status_code == 200
    assert _phone(read.json()) == expected


@pytest.mark.parametrize(
    "query",
    [
        {"phone": "0912000111"},
        {"phone": "+84912000111"},  # sent as %2B84912000111
        "phone=+84912000111",  # a bare "+" in a query string arrives as a space
        {"phone": "84912000111"},
        {"phone": "0084912000111"},
        {"phone": "0912 000 111"},
        {"phone": "phone|0912000111"},
        {"telecom": "0084912000111"},
    ],
)
def test_every_spelling_finds_the_patient(
    client: httpx.Client, created: dict[str, Any], query: str | dict[str, str]
) -> None:
    assert _found(client, query) == [created["id"]]


def test_another_number_finds_nothing(client: httpx.Client, created: dict[str, Any]) -> None:
    assert _found(client, {"phone": "0912000112"}) == []
    assert _found(client, {"phone": "0084912000112"}) == []


def test_an_unreadable_phone_is_kept_as_sent_and_found_as_sent(client: httpx.Client) -> None:
    body = patient("MRN-PHONE-2", telecom=[{"system": "phone", "value": "ext 12"}])
    response = fhir_post(client, "/Patient", body)
    assert response.status_code == 201, response.text
    assert _phone(response.json()) == {"system": "phone", "value": "ext 12"}
    assert _found(client, {"phone": "ext 12"}) == [response.json()["id"]]


def test_transaction_bundle_and_update_normalise_too(client: httpx.Client) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:8a1f3c52-1d1e-4d7a-9a57-2f3b2f0a0001",
                "resource": patient("MRN-PHONE-3", telecom=[{"system": "sms", "value": "091-200-0222"}]),
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    response = fhir_post(client, "/", bundle)
    assert response.status_code == 200, response.text
    location = response.json()["entry"][0]["response"]["location"]
    pid = location.split("/")[1]
    stored = client.get(f"/Patient/{pid}").json()
    assert stored["telecom"][0]["value"] == "+84912000222"
    assert _found(client, {"phone": "0912000222"}) == [pid]

    stored["telecom"] = [{"system": "phone", "value": "+84 (0) 912 000 333"}]
    updated = client.put(f"/Patient/{pid}", json=stored, headers={"Content-Type": "application/fhir+json"})
    assert updated.status_code == 200, updated.text
    assert _phone(updated.json())["value"] == "+84912000333"
    assert _found(client, {"phone": "84912000333"}) == [pid]
    assert _found(client, {"phone": "0912000222"}) == []
