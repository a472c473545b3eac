"""The audit page: verify with the anchors from the page, see the last checkpoint (issue #19)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update

from audit.schema import audit_event
from gateway.auth.users import UserDirectory
from tests.console.conftest import CHEAP, PASSWORD, PEOPLE, ConsoleServer, audit_events, csrf_of, sign_in
from tests.http.live import serve
from tests.support.audit_guard import guards_lifted

OFFICER = "Trần Thị Bình (binh.cs)"


@pytest.fixture
def console_server(database_url: str, tmp_path: Path) -> Iterator[ConsoleServer]:
    """The console with an anchor file of its own (the default one sits beside the shared key file)."""
    with serve(database_url, **CHEAP, audit_anchor_file=str(tmp_path / "anchors.jsonl")) as server:
        runtime = server.runtime
        users = UserDirectory(runtime.engine, runtime.store.cipher, runtime.settings.console)
        for username, (role, name) in PEOPLE.items():
            users.add(username, role, name, password=PASSWORD)
        yield ConsoleServer(server, users)


def _verify_events(console_server: ConsoleServer) -> list[dict[str, object]]:
    return [
        e for e in audit_events(console_server) if (e.get("subtype") or [{}])[0].get("code") == "audit-verify"
    ]


def test_officer_verifies_the_chain_with_anchors_and_sees_the_checkpoint(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    runtime = console_server.server.runtime
    sign_in(browser_client, "binh.cs")
    seq = runtime.audit.checkpoint()  # signed and anchored to the settings' anchor file
    assert seq is not None and runtime.settings.audit.anchor_path.exists()

    page = browser_client.get("/console/audit")
    assert page.status_code == 200
    assert f'data-checkpoint="{seq}"' in page.text and "Kiểm tra chuỗi với các neo" in page.text
    done = browser_client.post("/console/audit/verify", data={"csrf_token": csrf_of(page.text)})
    assert done.status_code == 303 and done.headers["location"] == "/console/audit"
    shown = browser_client.get("/console/audit").text
    assert 'data-ok="true"' in shown and "Toàn vẹn" in shown
    assert re.search(r'data-unanchored="\d+"', shown)  # events after the newest anchor are counted
    [event] = _verify_events(console_server)
    assert event["agent"][0]["altId"] == OFFICER  # type: ignore[index]
    assert "ok" in str(event["outcomeDesc"]) and event["outcome"] == "0"


def test_a_tampered_chain_is_reported_with_its_first_bad_event(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    runtime = console_server.server.runtime
    sign_in(browser_client, "binh.cs")
    runtime.audit.checkpoint()
    page = browser_client.get("/console/audit")
    with runtime.engine.begin() as conn, guards_lifted(conn):  # a writer edits an old event
        conn.execute(update(audit_event).where(audit_event.c.seq == 1).values(content=b'{"x":1}'))
    browser_client.post("/console/audit/verify", data={"csrf_token": csrf_of(page.text)})
    shown = browser_client.get("/console/audit").text
    assert 'data-ok="false"' in shown and "seq 1" in shown
    [event] = _verify_events(console_server)
    assert event["outcome"] != "0" and "bad seq 1" in str(event["outcomeDesc"])


@pytest.mark.parametrize("username", ["em.admin", "dung.bs", "chi.po", "an.op"])
def test_only_the_compliance_officer_runs_verify(
    console_server: ConsoleServer, browser_client: httpx.Client, username: str
) -> None:
    dashboard = sign_in(browser_client, username)
    assert browser_client.get("/console/audit").status_code == 403
    refused = browser_client.post("/console/audit/verify", data={"csrf_token": csrf_of(dashboard.text)})
    assert refused.status_code == 403 and _verify_events(console_server) == []


def test_verify_without_csrf_is_refused(console_server: ConsoleServer, browser_client: httpx.Client) -> None:
    sign_in(browser_client, "binh.cs")
    assert browser_client.post("/console/audit/verify", data={}).status_code == 403
    assert _verify_events(console_server) == []
