"""Production-mode HTTP behaviour on the real server (issue #16 item 7), on SQLite and PostgreSQL.

Local API docs, ``Cache-Control: no-store`` and ``nosniff`` on every PHI route,
``X-Forwarded-For`` believed only from configured proxies (the audit trail's
source address), and ``/metrics`` limited to loopback or a bearer token.
"""

from __future__ import annotations

import re
import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.routing import Mount, Route

from gateway.http.app import create_app
from gateway.http.security_headers import is_phi_path
from tests.audit_http.conftest import Auditor, request_ids
from tests.http.conftest import FHIR_JSON, fhir_post, patient
from tests.http.live import LiveServer, serve

TOKEN = secrets.token_urlsafe(32)
#: Routes that answer no patient data and no credentials.
NOT_PHI = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/static",
    "/.well-known/smart-configuration",
}


def production(tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    """Overrides for ``serve``: production mode on loopback, keys created at start in ``tmp_path``."""
    return {
        "env": "production",
        "base_url": "https://carebridge.hospital.example/fhir",
        "store_key_file": str(tmp_path / "store-keys.json"),
        "crm_key_file": str(tmp_path / "crm-keys.json"),
        **overrides,
    }


@pytest.fixture
def prod_server(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    with serve(database_url, **production(tmp_path, metrics_token=TOKEN)) as server:
        yield server


def assert_phi_headers(response: httpx.Response) -> None:
    assert response.headers.get_list("cache-control") == ["no-store"], response.request.url
    assert response.headers.get_list("x-content-type-options") == ["nosniff"], response.request.url


# --- /docs ---------------------------------------------------------------------------------------------


def test_docs_reference_only_local_urls(live_server: LiveServer) -> None:
    with httpx.Client(base_url=live_server.base_url, timeout=30) as http:
        page = http.get("/docs")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert re.findall(r"https?://", page.text) == []
        assert re.findall(r"//[a-z0-9.-]+\.[a-z]{2,}", page.text, flags=re.IGNORECASE) == []
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert {"/docs/static/swagger-ui-bundle.js", "/docs/static/swagger-ui.css"} <= set(assets)
        for asset in assets:
            response = http.get(asset)
            assert response.status_code == 200 and len(response.content) > 100, asset
        assert "validatorUrl" in page.text and '"validatorUrl": null' in page.text  # no online validator
        assert "url: '/openapi.json'" in page.text and http.get("/openapi.json").status_code == 200
        assert http.get("/redoc").status_code == 404


# --- PHI response headers ---------------------------------------------------------------------------


def test_every_phi_route_is_covered(live_server: LiveServer) -> None:
    """A new route outside the PHI prefixes must be added here on purpose (or get a PHI prefix)."""
    app = create_app(live_server.runtime)
    # the OpenAPI paths (every included router) and the app's own routes (docs, static files)
    paths = set(app.openapi()["paths"]) | {r.path for r in app.routes if isinstance(r, Route | Mount)}
    assert {p for p in paths if not is_phi_path(p)} == NOT_PHI
    assert {
        "/fhir/{type}/{id}",
        "/fhir/AuditEvent",
        "/crm/v1/changes",
        "/privacy/v1/requests",
        "/auth/token",
    } <= {p for p in paths if is_phi_path(p)}


def test_phi_responses_are_not_cached_nor_sniffed(live_server: LiveServer) -> None:
    base = live_server.base_url
    with httpx.Client(
        base_url=base, headers={"Accept": FHIR_JSON, **live_server.headers}, timeout=30
    ) as http:
        created = fhir_post(http, "/fhir/Patient", patient("MRN-NOSTORE"))
        assert created.status_code == 201
        pid = created.json()["id"]
        for response in (
            created,
            http.get(f"/fhir/Patient/{pid}"),
            http.get("/fhir/Patient", params={"identifier": "MRN-NOSTORE"}),
            http.get(f"/fhir/Patient/{pid}/_history"),
            http.get(f"/fhir/Patient/{pid}/$everything"),
            http.get("/fhir/Patient/missing"),  # 404 OperationOutcome
            http.get("/fhir/metadata"),
        ):
            assert response.status_code in (200, 201, 404), response.text
            assert_phi_headers(response)
    officer = live_server.auth("compliance_officer")
    assert_phi_headers(
        httpx.get(f"{base}/fhir/AuditEvent", headers={**officer, "Accept": FHIR_JSON}, timeout=30)
    )
    privacy = live_server.auth("privacy_officer")
    listed = httpx.get(f"{base}/privacy/v1/requests", headers=privacy, timeout=30)
    assert listed.status_code == 200, listed.text
    assert_phi_headers(listed)
    for path in ("/crm/v1/changes", "/privacy/v1/requests", "/fhir/Patient", "/fhir/AuditEvent"):
        refused = httpx.get(f"{base}{path}", timeout=30)  # no token: 401 OperationOutcome
        assert refused.status_code == 401
        assert_phi_headers(refused)
    token = httpx.post(f"{base}/auth/token", data={"grant_type": "client_credentials"}, timeout=30)
    assert_phi_headers(token)
    assert "cache-control" not in httpx.get(f"{base}/healthz", timeout=30).headers


# --- X-Forwarded-For ----------------------------------------------------------------------------------


def source_address_of(live: LiveServer, headers: dict[str, str]) -> str:
    """The address the audit trail records for an unauthenticated request with ``headers``."""
    request_id = f"xff-{uuid.uuid4().hex}"
    refused = httpx.get(
        f"{live.fhir_url}/Patient", headers={"X-Request-ID": request_id, **headers}, timeout=30
    )
    assert refused.status_code == 401
    auditor = Auditor(live)
    try:
        (event,) = [e for e in auditor.events() if request_id in request_ids(e)]
    finally:
        auditor.http.close()
    (address,) = [a["network"]["address"] for a in event["agent"] if "network" in a]
    return str(address)


def test_forwarded_for_is_ignored_without_trusted_proxies(live_server: LiveServer) -> None:
    assert source_address_of(live_server, {"X-Forwarded-For": "203.0.113.7"}) == "127.0.0.1"


def test_forwarded_for_is_believed_from_a_trusted_proxy(database_url: str) -> None:
    with serve(database_url, http_trusted_proxies="127.0.0.1/32") as live:
        assert source_address_of(live, {"X-Forwarded-For": "203.0.113.7"}) == "203.0.113.7"
        # a client that forged its own header before the proxy: the proxy's hop is the one believed
        assert source_address_of(live, {"X-Forwarded-For": "10.9.9.9, 203.0.113.8"}) == "203.0.113.8"
        assert source_address_of(live, {}) == "127.0.0.1"


def test_forwarded_for_is_ignored_from_an_untrusted_peer(database_url: str) -> None:
    with serve(database_url, http_trusted_proxies="10.20.0.5") as live:
        assert source_address_of(live, {"X-Forwarded-For": "203.0.113.7"}) == "127.0.0.1"


# --- /metrics in production ---------------------------------------------------------------------------


def test_metrics_in_production_need_loopback_or_the_token(prod_server: LiveServer) -> None:
    url = f"{prod_server.base_url}/metrics"
    assert httpx.get(url, timeout=30).status_code == 200  # a scraper on the same machine
    relayed = {"X-Forwarded-For": "203.0.113.7"}  # a local reverse proxy relaying an outsider
    refused = httpx.get(url, headers=relayed, timeout=30)
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert "carebridge_http_requests" not in refused.text
    wrong = httpx.get(url, headers={**relayed, "Authorization": f"Bearer {TOKEN[:-1]}x"}, timeout=30)
    assert wrong.status_code == 401
    allowed = httpx.get(url, headers={**relayed, "Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert allowed.status_code == 200 and "carebridge_http_requests" in allowed.text
    prod_server.runtime.audit.flush()
    auditor = Auditor(prod_server)
    try:
        denials = [
            e for e in auditor.events() if any(c.get("code") == "metrics" for c in e.get("subtype", []))
        ]
    finally:
        auditor.http.close()
    assert len(denials) == 2 and all(e["outcome"] == "12" for e in denials)


def test_metrics_without_a_token_are_loopback_only(database_url: str, tmp_path: Path) -> None:
    with serve(database_url, **production(tmp_path, http_trusted_proxies="127.0.0.1/32")) as live:
        url = f"{live.base_url}/metrics"
        assert httpx.get(url, timeout=30).status_code == 200
        outsider = httpx.get(url, headers={"X-Forwarded-For": "203.0.113.7"}, timeout=30)
        assert outsider.status_code == 403
        assert httpx.get(url, headers={"Authorization": "Bearer x"}, timeout=30).status_code == 200


def test_metrics_in_development_stay_open(live_server: LiveServer) -> None:
    response = httpx.get(
        f"{live_server.base_url}/metrics", headers={"X-Forwarded-For": "203.0.113.7"}, timeout=30
    )
    assert response.status_code == 200
