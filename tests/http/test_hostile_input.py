"""Hostile input is a 400/406/415 OperationOutcome naming the element, the same on SQLite and PostgreSQL.

Issue #17 items 5 and 7: a NUL anywhere (PostgreSQL cannot store it, SQLite
can), dates at the top of the FHIR range, impossible time-zone offsets, JSON
nested hundreds of levels deep, 64-bit-overflowing page tokens, a non-UTF-8
charset, and an XML Accept.  Every case runs on both backends (the
``database_url`` fixture behind ``live_server``) and checks that nothing was stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.http.conftest import FHIR_JSON, fhir_post, patient
from tests.http.live import LiveServer, serve

TOO_BIG = "9223372036854775808"  # 2**63: one past a signed 64-bit column


def _refused(response: httpx.Response, status: int, expression: str, code: str = "invalid") -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["code"] == code
    assert issue["expression"] == [expression]


def _patients(client: httpx.Client) -> int:
    return int(client.get("/Patient", params={"_summary": "count"}).json()["total"])


def _nested_extension(levels: int) -> dict[str, Any]:
    """An extension with ``levels`` extensions wrapped around it (two JSON levels each)."""
    extension: dict[str, Any] = {"url": "http://example.org/leaf", "valueString": "lá"}
    for _ in range(levels):
        extension = {"url": "http://example.org/wrap", "extension": [extension]}
    return extension


# --- NUL: JSON bodies, query strings, forms, paths, every API -------------------------------------


@pytest.mark.parametrize(
    ("fields", "expression"),
    [
        ({"name": [{"family": "Nguyễn\u0000", "given": ["An"]}]}, "Patient.name[0].family"),
        ({"address": [{"city": "Hà\u0000Nội"}]}, "Patient.address[0].city"),
        ({"birthDate\u0000": "1985-03-12"}, "Patient.'birthDate\\x00'"),
    ],
    ids=["name", "address", "key"],
)
def test_nul_in_a_json_body_names_the_element(
    client: httpx.Client, fields: dict[str, Any], expression: str
) -> None:
    _refused(fhir_post(client, "/Patient", patient("MRN-NUL", **fields)), 400, expression)
    assert _patients(client) == 0


def test_nul_in_a_bundle_entry_and_update(client: httpx.Client) -> None:
    entry = {
        "resource": patient("MRN-NUL", address=[{"line": ["1\u0000"]}]),
        "request": {"method": "POST", "url": "Patient"},
    }
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    _refused(fhir_post(client, "", bundle), 400, "Bundle.entry[0].resource.address[0].line[0]")
    created = fhir_post(client, "/Patient", patient("MRN-OK")).json()
    update = {**created, "gender": "male\u0000"}
    _refused(client.put(f"/Patient/{created['id']}", json=update), 400, "Patient.gender")
    assert client.get(f"/Patient/{created['id']}").headers["etag"] == 'W/"1"'


def test_an_escaped_backslash_before_u0000_is_not_a_nul(client: httpx.Client) -> None:
    """``"\\\\u0000"`` is a backslash followed by the text ``u0000``: ordinary data."""
    raw = b'{"resourceType":"Patient","name":[{"family":"a\\\\u0000b"}]}'
    response = client.post("/Patient", content=raw, headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 201, response.text
    assert response.json()["name"][0]["family"] == "a\\u0000b"


@pytest.mark.parametrize(
    ("path", "params", "expression"),
    [
        ("/Patient", {"name": "Nguy\x00"}, "name"),
        ("/Patient", {"address": "Hà Nội\x00"}, "address"),
        ("/Patient", {"_id": "abc\x00"}, "_id"),
        ("/Patient", {"_page_token": "tok\x00en"}, "_page_token"),
        ("/Encounter", {"subject": "Patient/a\x00b"}, "subject"),
        ("/Appointment", {"actor:Patient.identifier": "x|\x00"}, "actor:Patient.identifier"),
        ("/Patient/_history", {"_since": "2020\x00"}, "_since"),
        ("/Patient", {"na\x00me": "x"}, "query"),
    ],
    ids=["name", "address", "id", "page-token", "reference", "chained", "history", "param-name"],
)
def test_nul_in_a_search_names_the_parameter(
    client: httpx.Client, path: str, params: dict[str, str], expression: str
) -> None:
    _refused(client.get(path, params=params), 400, expression)


def test_nul_in_a_search_form_and_in_a_path(client: httpx.Client) -> None:
    form = client.post(
        "/Patient/_search",
        content=b"family=Nguy%00",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    _refused(form, 400, "family")
    _refused(client.get("/Patient/abc%00def"), 400, "path")
    _refused(client.get("/Patient/abc%00def/_history/1"), 400, "path")


def test_nul_in_privacy_audit_and_crm_queries(live_server: LiveServer) -> None:
    base = live_server.base_url
    officer = live_server.auth("privacy_officer")
    auditor = {"Accept": FHIR_JSON, **live_server.auth("compliance_officer")}
    with httpx.Client(base_url=base, timeout=30) as http:
        _refused(
            http.get("/privacy/v1/requests", params={"overdue": "\x00"}, headers=officer), 400, "overdue"
        )
        _refused(http.get("/privacy/v1/requests/a%00b", headers=officer), 400, "path")
        filed = http.post(
            "/privacy/v1/requests", json={"type": "access", "reason": "l\u0000ý do"}, headers=officer
        )
        _refused(filed, 400, "reason")
        for params, expression in (
            ({"entity": "Patient/a\x00b"}, "entity"),
            ({"agent": "\x00"}, "agent"),
            ({"date": "ge2020\x00"}, "date"),
        ):
            _refused(http.get("/fhir/AuditEvent", params=params, headers=auditor), 400, expression)
        _refused(
            http.get("/crm/v1/changes", params={"cursor": "1\x00"}, headers=live_server.headers),
            400,
            "cursor",
        )


# --- dates at the edges of the range, time-zone offsets ---------------------------------------------


def test_dates_at_the_top_of_the_range_are_stored_and_searchable(client: httpx.Client) -> None:
    created = fhir_post(client, "/Patient", patient("MRN-9999", birthDate="9999-12-31"))
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    for value in ("ge9999", "9999-12-31", "eq9999", "le9999-12-31T23:59:59.999Z", "gt9999-12-30"):
        found = client.get("/Patient", params={"birthdate": value}).json()
        assert [e["resource"]["id"] for e in found.get("entry", [])] == [pid], value
    encounter = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{pid}"},
        "period": {"start": "2020-01-01T00:00:00+07:00", "end": "9999-12-31T23:59:59-14:00"},
    }
    assert fhir_post(client, "/Encounter", encounter).status_code == 201
    assert client.get("/Encounter", params={"date": "ge9999-12-31"}).json()["total"] == 1
    for params in (
        {"_lastUpdated": "gt9999-12-31T23:59:59Z"},
        {"_lastUpdated": "ge9999"},
        {"birthdate": "gt9999"},
    ):
        response = client.get("/Patient", params=params)
        assert response.status_code == 200 and response.json()["total"] == 0, params
    assert (
        client.get("/Patient", params={"_lastUpdated": "lt9999-12-31T23:59:59.999999Z"}).json()["total"] == 1
    )
    history = client.get("/Patient/_history", params={"_since": "9999-12-31T23:59:59Z"})
    assert history.status_code == 200 and history.json().get("entry", []) == []
    assert client.get("/Patient", params={"birthdate": "ge0001-01-01T00:00:00+14:00"}).json()["total"] == 1


@pytest.mark.parametrize("offset", ["+99:99", "+14:01", "-15:00", "+05:60"])
def test_an_impossible_time_zone_offset_is_a_400(client: httpx.Client, offset: str) -> None:
    _refused(
        client.get("/Patient", params={"_lastUpdated": f"gt2020-01-01T00:00:00{offset}"}), 400, "_lastUpdated"
    )
    _refused(
        client.get("/Patient/_history", params={"_since": f"2020-01-01T00:00:00{offset}"}), 400, "_since"
    )
    encounter = {
        "resourceType": "Encounter",
        "status": "planned",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "period": {"start": f"2020-01-01T00:00:00{offset}"},
    }
    response = fhir_post(client, "/Encounter", encounter)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["expression"][0].startswith("Encounter.period")
    assert client.get("/Encounter", params={"_summary": "count"}).json()["total"] == 0


def test_the_widest_offsets_are_accepted(client: httpx.Client) -> None:
    for offset in ("+14:00", "-12:00", "+13:59"):
        response = client.get("/Patient", params={"_lastUpdated": f"gt2020-01-01T00:00:00{offset}"})
        assert response.status_code == 200, (offset, response.text)


# --- nesting depth ---------------------------------------------------------------------------------


def _nested_text(levels: int) -> bytes:
    """The JSON text of a Patient with ``levels`` nested extensions (no encoder recursion)."""
    wrap = '{"url":"http://example.org/wrap","extension":['
    leaf = '{"url":"http://example.org/leaf","valueString":"l\u00e1"}'
    inner = wrap * levels + leaf + "]}" * levels
    return ('{"resourceType":"Patient","extension":[' + inner + "]}").encode()


@pytest.mark.parametrize("levels", [31, 150, 500])
def test_deeply_nested_extensions_are_a_400(client: httpx.Client, levels: int) -> None:
    response = client.post("/Patient", content=_nested_text(levels), headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert issue["expression"][0].startswith("Patient.extension[0].extension[0]")
    assert "64 levels" in issue["diagnostics"]
    assert _patients(client) == 0


def test_nesting_up_to_the_limit_is_accepted(client: httpx.Client) -> None:
    # Patient (1) > extension (2) > 30 × (object, extension list) > leaf object: depth 63
    response = fhir_post(client, "/Patient", patient("MRN-30", extension=[_nested_extension(30)]))
    assert response.status_code == 201, response.text


@pytest.fixture
def deep_server(database_url: str) -> Iterator[LiveServer]:
    with serve(database_url, http_max_json_depth=100) as server:
        yield server


def test_the_highest_depth_setting_still_validates_without_recursion_errors(deep_server: LiveServer) -> None:
    """At the cap (100), a transaction Bundle nested to the limit is stored, one level more is a 400."""

    def bundle(levels: int) -> dict[str, Any]:
        entry = {
            "resource": patient(f"MRN-{levels}", extension=[_nested_extension(levels)]),
            "request": {"method": "POST", "url": "Patient"},
        }
        return {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}

    headers = {**deep_server.headers, "Content-Type": FHIR_JSON}
    with httpx.Client(base_url=deep_server.fhir_url, headers=headers, timeout=60) as http:
        # Bundle (1) > entry (2) > entry object (3) > resource (4) > extension (5) > 2 per level > leaf
        assert http.post("", json=bundle(47)).status_code == 200
        deepest = "Bundle.entry[0].resource.extension[0]" + ".extension[0]" * 47 + ".extension"
        _refused(http.post("", json=bundle(48)), 400, deepest)


# --- page tokens -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/Patient", "/Patient/_history", "/_history", "/Patient/abc/_history", "/AuditEvent"]
)
def test_a_page_token_past_64_bits_is_a_400(live_server: LiveServer, path: str) -> None:
    headers = {
        "Accept": FHIR_JSON,
        **(live_server.auth("compliance_officer") if "Audit" in path else live_server.headers),
    }
    response = httpx.get(f"{live_server.fhir_url}{path}", params={"_page_token": TOO_BIG}, headers=headers)
    _refused(response, 400, "_page_token")


def test_offsets_and_counts_past_64_bits_are_not_server_errors(client: httpx.Client) -> None:
    for name in ("_offset", "_count"):
        assert client.get("/Patient", params={name: TOO_BIG}).status_code in (200, 400)
    assert client.get("/Patient/_history", params={"_count": TOO_BIG}).status_code in (200, 400)


# --- charset and Accept --------------------------------------------------------------------------------


@pytest.mark.parametrize("charset", ["iso-8859-1", "utf-16", "windows-1258", '"latin1"'])
def test_a_charset_other_than_utf8_is_a_415(client: httpx.Client, charset: str) -> None:
    body = b'{"resourceType":"Patient","name":[{"family":"Nguy\xe1n"}]}'
    response = client.post(
        "/Patient", content=body, headers={"Content-Type": f"{FHIR_JSON}; charset={charset}"}
    )
    _refused(response, 415, "Content-Type", code="not-supported")
    assert _patients(client) == 0


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", '"utf-8"', "utf8"])
def test_utf8_charsets_are_accepted(client: httpx.Client, charset: str) -> None:
    response = fhir_post(
        client, "/Patient", patient(f"MRN-{charset}"), **{"Content-Type": f"{FHIR_JSON}; charset={charset}"}
    )
    assert response.status_code == 201, response.text


def test_a_latin1_form_and_a_latin1_privacy_request_are_415(live_server: LiveServer) -> None:
    base = live_server.base_url
    form = httpx.post(
        f"{base}/fhir/Patient/_search",
        content=b"family=Nguy%E1n",
        headers={
            **live_server.headers,
            "Content-Type": "application/x-www-form-urlencoded; charset=iso-8859-1",
        },
    )
    _refused(form, 415, "Content-Type", code="not-supported")
    officer = live_server.auth("privacy_officer")
    filed = httpx.post(
        f"{base}/privacy/v1/requests",
        content=b'{"type":"access","reason":"l\xfd do"}',
        headers={**officer, "Content-Type": "application/json; charset=iso-8859-1"},
    )
    _refused(filed, 415, "Content-Type", code="not-supported")


@pytest.mark.parametrize(
    "accept", ["application/fhir+xml", "application/xml", "text/html", "application/json;q=0"]
)
def test_an_xml_accept_is_a_406_on_every_api(live_server: LiveServer, accept: str) -> None:
    base = live_server.base_url
    for path, headers in (
        ("/fhir/Patient", live_server.headers),
        ("/fhir/metadata", {}),
        ("/privacy/v1/requests", live_server.auth("privacy_officer")),
        ("/crm/v1/changes", live_server.headers),
    ):
        response = httpx.get(f"{base}{path}", headers={**headers, "Accept": accept})
        _refused(response, 406, "Accept", code="not-supported")
    _refused(
        httpx.get(f"{base}/fhir/Patient", params={"_format": "xml"}, headers=live_server.headers),
        406,
        "_format",
        code="not-supported",
    )


@pytest.mark.parametrize(
    "accept", [None, "*/*", "application/json", FHIR_JSON, "application/fhir+xml;q=0.9, */*;q=0.1"]
)
def test_json_accepts_keep_working(live_server: LiveServer, accept: str | None) -> None:
    base = live_server.base_url
    extra = {} if accept is None else {"Accept": accept}
    for path, headers in (
        ("/fhir/Patient", live_server.headers),
        ("/fhir/metadata", {}),
        ("/privacy/v1/requests", live_server.auth("privacy_officer")),
    ):
        response = httpx.get(f"{base}{path}", headers={**headers, **extra})
        assert response.status_code == 200, (path, response.text)
