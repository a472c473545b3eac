"""CapabilityStatement content, health/readiness, Prometheus metrics, request ids."""

from __future__ import annotations

from typing import Any

import httpx
from fhir.resources.R4B.capabilitystatement import CapabilityStatement

from fhir_store.search_params import SEARCH_SPECS
from fhir_store.validation import SUPPORTED_TYPES
from tests.http.conftest import LiveServer, fhir_post, patient


def test_capability_statement(client: httpx.Client) -> None:
    response = client.get("/metadata")
    assert response.status_code == 200
    statement: dict[str, Any] = response.json()
    CapabilityStatement.model_validate(statement)
    assert statement["fhirVersion"] == "4.0.1"
    assert "json" in statement["format"]
    rest = statement["rest"][0]
    assert {i["code"] for i in rest["interaction"]} == {"transaction", "batch", "history-system"}
    by_type = {r["type"]: r for r in rest["resource"]}
    audit = by_type.pop("AuditEvent")  # served by its own read-only routes, not the store
    assert {i["code"] for i in audit["interaction"]} == {"read", "search-type"}
    assert set(by_type) == SUPPORTED_TYPES
    for resource_type, resource in by_type.items():
        codes = {i["code"] for i in resource["interaction"]}
        assert codes == {
            "read",
            "vread",
            "update",
            "delete",
            "history-instance",
            "history-type",
            "create",
            "search-type",
        }
        assert resource["versioning"] == "versioned-update"
        assert resource["readHistory"] is True
        assert resource["conditionalCreate"] is True
        assert resource["conditionalUpdate"] is True
        assert resource["conditionalDelete"] == "single"
        params = {p["name"]: p["type"] for p in resource["searchParam"]}
        expected = {name: p.kind for name, p in SEARCH_SPECS[resource_type].params.items()}
        assert params == {**expected, "_id": "token", "_lastUpdated": "date"}
    assert by_type["Encounter"]["searchInclude"] == ["Encounter:subject", "Encounter:patient"]
    assert "Encounter:subject" in by_type["Patient"]["searchRevInclude"]
    assert by_type["Patient"]["operation"][0]["name"] == "everything"


def test_health_ready_metrics(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.base_url, headers=live_server.headers) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        ready = http.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready"
        created = fhir_post(http, "/fhir/Patient", patient("MRN-MET"))
        http.get(f"/fhir/Patient/{created.json()['id']}")
        http.get("/fhir/Patient/missing")
        metrics = http.get("/metrics")
        assert metrics.status_code == 200
        text = metrics.text
        assert (
            'carebridge_http_requests_total{method="GET",route="/fhir/{type}/{id}",status="200"} 1.0' in text
        )
        assert (
            'carebridge_http_requests_total{method="GET",route="/fhir/{type}/{id}",status="404"} 1.0' in text
        )
        assert 'route="/fhir/{type}",status="201"' in text
        assert "carebridge_http_request_duration_seconds_bucket" in text
        assert "MRN-MET" not in text and created.json()["id"] not in text


def test_readyz_reports_unmigrated_database(live_server: LiveServer) -> None:
    with live_server.runtime.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = 'old'")
    with httpx.Client(base_url=live_server.base_url, headers=live_server.headers) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["schema_revision"] == "old"


def test_request_id_echoed_everywhere(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.base_url, headers=live_server.headers) as http:
        assert http.get("/healthz", headers={"X-Request-ID": "abc-1"}).headers["x-request-id"] == "abc-1"
        assert len(http.get("/fhir/metadata").headers["x-request-id"]) == 32
