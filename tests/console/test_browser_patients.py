"""The compliance officer in a real browser: find a patient by record number, see the accesses, verify the trail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.auth.users import UserDirectory
from tests.console.conftest import CHEAP, PASSWORD, PEOPLE, ConsoleServer
from tests.console.test_patients import ingest_and_read
from tests.http.live import serve
from tests.support.browser import browser, screenshot


@pytest.fixture
def console_server(database_url: str, tmp_path: Path) -> Iterator[ConsoleServer]:
    """The console with an anchor file of its own, so the verify on the screenshot is this database's."""
    with serve(database_url, **CHEAP, audit_anchor_file=str(tmp_path / "anchors.jsonl")) as server:
        runtime = server.runtime
        users = UserDirectory(runtime.engine, runtime.store.cipher, runtime.settings.console)
        for username, (role, name) in PEOPLE.items():
            users.add(username, role, name, password=PASSWORD)
        yield ConsoleServer(server, users)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])  # the browser drives pages; storage is covered elsewhere
def test_officer_finds_a_patient_sees_accesses_and_verifies(console_server: ConsoleServer) -> None:
    patient_id, _ = ingest_and_read(console_server)
    console_server.server.runtime.audit.checkpoint()  # signed and anchored
    with browser() as chromium:
        page = chromium.new_page(viewport={"width": 1366, "height": 768}, locale="vi-VN")
        page.goto(f"{console_server.base_url}/console")
        page.fill("input[name=username]", "binh.cs")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/console")
        page.click("header nav a[href='/console/patients']")
        page.fill("input[name=q]", "BN000123")
        page.click("main button[type=submit]")
        page.locator("#matches a").first.wait_for()
        assert "BN000123" in page.locator("#matches").inner_text()
        screenshot(page, "patients")
        page.locator("#matches a").first.click()
        page.wait_for_url(f"**/console/patients/{patient_id}")
        accesses = page.locator("#accesses").inner_text()
        assert "Điều trị" in accesses and "Trần Thị Bình (binh.cs)" in accesses
        screenshot(page, "patient")
        page.click("header nav a[href='/console/audit']")
        page.click("main button[type=submit]")
        page.wait_for_url("**/console/audit")
        result = page.locator("#verify-result")
        assert result.locator("[data-ok]").get_attribute("data-ok") == "true"
        assert "Toàn vẹn" in result.inner_text()
        screenshot(page, "audit")
