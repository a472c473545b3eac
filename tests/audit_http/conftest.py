"""Fixtures of the AuditEvent API tests: the live server of the HTTP tests, plus helpers.

Tests run the real app (uvicorn in a thread) on both backends and talk to it
with real tokens from ``POST /auth/token``; the audit hook of that runtime is
flushed before each query so buffered read events are in the chain.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.http.conftest import FHIR_JSON, client, live_server  # noqa: F401  (fixtures)
from tests.http.live import LiveServer


class Auditor:
    """A compliance_officer client of the live server."""

    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.http = httpx.Client(
            base_url=live.fhir_url,
            headers={"Accept": FHIR_JSON, **live.auth("compliance_officer")},
            timeout=30,
        )

    def search(self, **params: Any) -> dict[str, Any]:
        """Search after flushing the buffered access events; assert 200."""
        self.live.runtime.audit.flush()
        response = self.http.get("/AuditEvent", params=params)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith(FHIR_JSON)
        body: dict[str, Any] = response.json()
        assert body["resourceType"] == "Bundle" and body["type"] == "searchset"
        return body

    def events(self, **params: Any) -> list[dict[str, Any]]:
        return [e["resource"] for e in self.search(_count="1000", **params).get("entry", [])]


@pytest.fixture
def auditor(live_server: LiveServer) -> Iterator[Auditor]:  # noqa: F811
    a = Auditor(live_server)
    yield a
    a.http.close()


def request_ids(event: dict[str, Any]) -> list[str]:
    return [
        e["what"]["identifier"]["value"]
        for e in event.get("entity", [])
        if e.get("type", {}).get("code") == "XrequestId"
    ]


def agent_id(event: dict[str, Any]) -> str:
    return str(event["agent"][0]["altId"])
