"""A live carebridge with a CRM, a webhook receiver, a controllable privacy clock and helpers for issue #6."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent.rights import ManualClock
from consent.rights.calendar import VN_TZ
from consent.rights.service import RightsService
from tests.crm_bridge.conftest import CrmClient, Receiver, receiver, serve_crm
from tests.http.live import LiveServer

__all__ = ["CrmClient", "Receiver", "privacy", "receiver", "start_clock"]


@pytest.fixture
def rights_live(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    with serve_crm(database_url, tmp_path, privacy_tombstone_file=str(tmp_path / "tombstones.jsonl")) as live:
        yield live


@pytest.fixture
def rights_crm(rights_live: LiveServer) -> Iterator[CrmClient]:
    client = CrmClient(rights_live)
    yield client
    client.http.close()


def start_clock(live: LiveServer, when: datetime) -> ManualClock:
    """Give the running server's privacy workflow a clock the test controls."""
    clock = ManualClock(when.replace(tzinfo=VN_TZ) if when.tzinfo is None else when)
    service: RightsService = live.runtime.privacy
    service.deps.clock = clock
    return clock


def privacy(live: LiveServer, headers: dict[str, str]) -> httpx.Client:
    return httpx.Client(base_url=f"{live.base_url}/privacy/v1", headers=headers, timeout=30)


def create(live: LiveServer, resource: dict[str, Any]) -> str:
    response = httpx.post(
        f"{live.fhir_url}/{resource['resourceType']}",
        json=resource,
        headers={**live.headers, "Content-Type": "application/fhir+json"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def erase(live: LiveServer, pid: str) -> None:
    """The patient files an erasure request and a privacy officer processes it (both over HTTP)."""
    with (
        privacy(live, live.auth("patient", patient_id=pid)) as mine,
        privacy(live, live.auth("privacy_officer")) as officer,
    ):
        filed = mine.post("/requests", json={"type": "erasure", "reason": "Tôi không dùng dịch vụ nữa"})
        assert filed.status_code == 201, filed.text
        done = officer.post(f"/requests/{filed.json()['id']}/process", json={})
        assert done.status_code == 200, done.text
