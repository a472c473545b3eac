"""The privacy queue and the administration page in a real browser (Debian's chromium, Playwright)."""

from __future__ import annotations

from datetime import datetime

import pytest

from fhir_store import RequestContext
from tests.console.conftest import PASSWORD, ConsoleServer
from tests.console.test_privacy_page import MRN, make_patient, set_clock
from tests.support.browser import browser, screenshot, sign_in_as


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])  # the browser drives pages; storage is covered elsewhere
def test_file_an_erasure_by_record_number_see_its_deadlines_then_add_a_user(
    console_server: ConsoleServer,
) -> None:
    base = console_server.base_url
    patient_id = make_patient(console_server)
    other = make_patient(console_server, "BN-PRIV-0007", family="Khác")
    set_clock(console_server, datetime(2026, 2, 9, 9, 0))
    context = RequestContext(request_id="test", client_id="Lê Thị Chi (chi.po)", role="privacy_officer")
    console_server.server.runtime.privacy.file(  # an access request filed a month ago: overdue now
        context,
        patient_id=other,
        request_type="access",
        scope={},
        reason="Xin bản sao hồ sơ",
        verification="CCCD",
    )
    set_clock(console_server, datetime(2026, 3, 2, 9, 0))  # a Monday
    with browser() as chromium:
        page = chromium.new_page(viewport={"width": 1366, "height": 768}, locale="vi-VN")
        sign_in_as(page, base, "chi.po", PASSWORD)
        page.click("nav a[href='/console/privacy']")
        assert page.locator("h1").inner_text() == "Yêu cầu về dữ liệu cá nhân"
        page.fill("input[name=mrn]", MRN)
        page.click("form.row button[type=submit]")
        match = page.locator(".match")
        assert f"Patient/{patient_id}" in match.inner_text()
        match.locator("select[name=type]").select_option("erasure")
        match.locator("input[name=reason]").fill("Tôi không dùng dịch vụ nữa")
        match.locator("input[name=verification]").fill("CCCD đối chiếu tại quầy")
        match.locator("button[type=submit]").click()
        page.wait_for_url("**/console/privacy/*?done=filed")
        assert page.locator("[data-deadline=acknowledge]").inner_text() == "04/03/2026 23:59"
        assert page.locator("[data-deadline=complete]").inner_text() == "22/03/2026 23:59"
        assert page.locator("#sla").inner_text() == "Đúng hạn"
        screenshot(page, "privacy-request")
        page.click("a[href='/console/privacy']")
        assert page.locator("tr.sla-on-time").count() == 1 and page.locator("tr.sla-overdue").count() == 1
        page.fill("input[name=mrn]", MRN)  # the patient found again, above the coloured queue
        page.click("form.row button[type=submit]")
        screenshot(page, "privacy")
        page.click("header button[type=submit]")  # sign out

        sign_in_as(page, base, "em.admin", PASSWORD)
        page.click("nav a[href='/console/admin']")
        form = page.locator("#add-user")
        form.locator("input[name=username]").fill("giang.po")
        form.locator("input[name=display_name]").fill("Võ Thị Giang")
        form.locator("select[name=role]").select_option("privacy_officer")
        form.locator("button[type=submit]").click()
        assert page.locator("#one-time .secret").inner_text().strip() != ""
        assert page.locator("tr[data-user='giang.po']").is_visible()
        screenshot(page, "admin")
