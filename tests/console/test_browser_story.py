"""Issue #19's must-show story end to end in Debian's chromium, three people, one patient.

An integration engineer signs in, finds a message refused for a charset problem
by its control id, fixes the sender's charset, reprocesses it and sees it
processed with its Patient; a compliance officer finds that patient by record
number and sees who accessed the record (the engineer's view of the raw message
among them); a privacy officer files an erasure for the same patient and sees
its deadlines.  Screenshots of every step are kept as test artifacts.
"""

from __future__ import annotations

import re

import httpx
import pytest

from gateway.sender_registry import SenderRegistry
from tests.console.conftest import PASSWORD, ConsoleServer
from tests.console.test_messages import LATIN1, feed
from tests.support.browser import browser, screenshot, sign_in_as

CONTROL_ID = "LAT00001"
RECORD_NUMBER = "000888"
LOCAL_TIME = re.compile(r"^\d{2}/\d{2}/\d{4} \d{2}:\d{2}$")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])  # the browser drives pages; storage is covered elsewhere
def test_refused_message_fixed_reprocessed_then_accesses_seen_and_erasure_filed(
    console_server: ConsoleServer,
) -> None:
    runtime = console_server.server.runtime
    SenderRegistry(runtime.engine).add("HIS_OLD", "PK_CU", networks=["127.0.0.0/8"])
    journal_id, status = feed(console_server, LATIN1)
    assert status in ("rejected", "failed")  # Latin-1 bytes, no MSH-18, read as UTF-8
    base = console_server.base_url
    with browser() as chromium:
        page = chromium.new_page(viewport={"width": 1366, "height": 900}, locale="vi-VN")

        # the integration engineer
        sign_in_as(page, base, "an.op", PASSWORD)
        page.click("header nav a[href='/console/messages']")
        page.fill("input[name=control_id]", CONTROL_ID)
        page.click("form.filters button[type=submit]")
        assert page.locator("table.messages tr[data-id]").count() == 1
        page.locator(f"table.messages tr[data-id='{journal_id}'] a").first.click()
        page.wait_for_url(f"**/console/messages/{journal_id}")
        screenshot(page, "story-1-refused-message")
        page.goto(f"{base}/console/senders")
        sender = page.locator("tr[data-sender='HIS_OLD^PK_CU']")
        sender.locator("input[name=charset]").fill("8859/1")  # HL7 table 0211 label
        sender.locator("form.charset button[type=submit]").click()
        page.wait_for_url("**/console/senders")
        page.goto(f"{base}/console/messages/{journal_id}")
        page.fill("form.reprocess input[name=reason]", "Bên gửi dùng bảng mã Latin-1, đã sửa cấu hình")
        page.click("form.reprocess button[type=submit]")
        after = page.locator(f"table.reprocessed tr[data-id='{journal_id}'] td[data-after]")
        assert after.get_attribute("data-after") == "processed"
        patient_link = page.locator("table.reprocessed a.resource", has_text="Patient/")
        assert patient_link.count() == 1
        patient_id = re.search(r"Patient/([0-9a-f-]{36})", patient_link.inner_text())
        assert patient_id is not None
        screenshot(page, "story-2-reprocessed")
        page.goto(f"{base}/console/dead-letters")
        assert page.locator("h1").is_visible()
        screenshot(page, "dead-letters")
        page.click("header button[type=submit]")  # sign out

        # a clinician's system reads the record over FHIR, for a purpose
        headers = {**console_server.server.headers, "X-Purpose-Of-Use": "TREAT"}
        read = httpx.get(f"{console_server.server.fhir_url}/Patient/{patient_id[1]}", headers=headers)
        assert read.status_code == 200

        # the compliance officer
        sign_in_as(page, base, "binh.cs", PASSWORD)
        page.click("header nav a[href='/console/patients']")
        page.fill("input[name=q]", RECORD_NUMBER)
        page.click("main button[type=submit]")
        page.locator("#matches a").first.click()
        page.wait_for_url(f"**/console/patients/{patient_id[1]}")
        accesses = page.locator("#accesses").inner_text()
        assert "Nguyễn Văn An (an.op)" in accesses  # the engineer's view of the raw message
        assert "Điều trị" in accesses  # the FHIR read, with its purpose in words
        screenshot(page, "story-3-accesses")
        page.click("header button[type=submit]")

        # the privacy officer
        sign_in_as(page, base, "chi.po", PASSWORD)
        page.click("nav a[href='/console/privacy']")
        page.fill("input[name=mrn]", RECORD_NUMBER)
        page.click("form.row button[type=submit]")
        match = page.locator(".match")
        assert f"Patient/{patient_id[1]}" in match.inner_text()
        match.locator("select[name=type]").select_option("erasure")
        match.locator("input[name=reason]").fill("Tôi muốn xoá dữ liệu của mình")
        match.locator("input[name=verification]").fill("CCCD đối chiếu tại quầy")
        match.locator("button[type=submit]").click()
        page.wait_for_url("**/console/privacy/*?done=filed")
        acknowledge = page.locator("[data-deadline=acknowledge]").inner_text()
        complete = page.locator("[data-deadline=complete]").inner_text()
        assert LOCAL_TIME.match(acknowledge) and LOCAL_TIME.match(complete)
        assert page.locator("#sla").inner_text() == "Đúng hạn"
        screenshot(page, "story-4-erasure-deadlines")
