"""A real carebridge HTTP server per test, on a free loopback port, for each backend.

The server is uvicorn running :func:`gateway.http.app.create_app` in a
background thread against the ``database_url`` fixture (SQLite and PostgreSQL,
already migrated), on a socket bound here so there is no port race.  Tests talk
to it over real HTTP (httpx, fhirpy), exactly as a client would.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.http.live import LiveServer, serve

__all__ = ["FHIR_JSON", "LiveServer", "fhir_post", "patient"]

FHIR_JSON = "application/fhir+json"


@pytest.fixture
def live_server(database_url: str) -> Iterator[LiveServer]:
    with serve(database_url) as server:
        yield server


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    headers = {"Accept": FHIR_JSON, **live_server.headers}
    with httpx.Client(base_url=live_server.fhir_url, headers=headers, timeout=30) as http:
        yield http


def fhir_post(http: httpx.Client, path: str, resource: dict[str, Any], **headers: str) -> httpx.Response:
    return http.post(path, json=resource, headers={"Content-Type": FHIR_JSON, **headers})


def patient(identifier: str, *, system: str = "urn:oid:1.2.704.0.1", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": identifier}],
        "name": [{"family": "Nguyễn", "given": ["Văn", "An"], "text": "Nguyễn Văn An"}],
        "gender": "male",
        "birthDate": "1985-03-12",
    }
    body.update(fields)
    return body
