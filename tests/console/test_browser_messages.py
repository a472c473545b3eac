"""The must-show story in a real browser (issue #19): a message refused for its charset, fixed and reprocessed."""

from __future__ import annotations

import pytest

from gateway.sender_registry import SenderRegistry
from tests.console.conftest import PASSWORD, ConsoleServer
from tests.console.test_messages import LATIN1, feed
from tests.support.browser import browser, screenshot


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])  # the browser drives pages; storage is covered elsewhere
def test_find_the_charset_refused_message_fix_the_sender_reprocess_see_its_patient(
    console_server: ConsoleServer,
) -> None:
    runtime = console_server.server.runtime
    SenderRegistry(runtime.engine).add("HIS_OLD", "PK_CU", networks=["127.0.0.0/8"])
    journal_id, status = feed(console_server, LATIN1)
    assert status != "processed"
    base = console_server.base_url
    with browser() as chromium:
        page = chromium.new_page(viewport={"width": 1366, "height": 900}, locale="vi-VN")
        page.goto(f"{base}/console")
        page.fill("input[name=username]", "an.op")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/console")
        page.click("header nav a[href='/console/messages']")
        page.fill("input[name=control_id]", "LAT00001")
        page.click("form.filters button[type=submit]")
        row = page.locator(f"table.messages tr[data-id='{journal_id}']")
        assert row.locator("td").nth(5).inner_text() in ("Bị từ chối", "failed", "Thất bại")
        assert page.locator("table.messages tr[data-id]").count() == 1
        screenshot(page, "messages")
        row.locator("a").first.click()
        page.wait_for_url(f"**/console/messages/{journal_id}")
        assert "utf-8" in page.locator("td.error").inner_text()
        assert page.locator("table.segment caption", has_text="PID").count() == 1  # the operator sees raw HL7
        screenshot(page, "message")

        page.goto(f"{base}/console/senders")
        sender = page.locator("tr[data-sender='HIS_OLD^PK_CU']")
        sender.locator("input[name=charset]").fill("latin-1")
        sender.locator("form.charset button[type=submit]").click()
        page.wait_for_url("**/console/senders")
        assert (
            page.locator("tr[data-sender='HIS_OLD^PK_CU'] input[name=charset]").input_value() == "iso8859-1"
        )
        screenshot(page, "senders")

        page.goto(f"{base}/console/messages/{journal_id}")
        page.fill("form.reprocess input[name=reason]", "Đã sửa bảng mã của bên gửi HIS_OLD")
        page.click("form.reprocess button[type=submit]")
        after = page.locator(f"table.reprocessed tr[data-id='{journal_id}'] td[data-after]")
        assert after.get_attribute("data-after") == "processed"
        patient = page.locator("table.reprocessed a.resource", has_text="Patient/")
        assert patient.count() == 1 and "/_history/1" in (patient.get_attribute("href") or "")
        page.click(f"table.reprocessed a[href='/console/messages/{journal_id}']")
        assert page.locator("h1 small").get_attribute("data-status") == "processed"
        assert page.locator("table.changes a.resource", has_text="Patient/").count() == 1
        assert "Lê" in page.locator("table.segment").first.inner_text() + page.content()
