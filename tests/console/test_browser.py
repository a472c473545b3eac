"""The console in a real browser (Debian's chromium through Playwright): sign in, dashboard, language."""

from __future__ import annotations

import pytest

from tests.console.conftest import PASSWORD, ConsoleServer
from tests.support.browser import browser, screenshot


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"])  # the browser drives pages; storage is covered elsewhere
def test_sign_in_see_the_dashboard_switch_language_sign_out(console_server: ConsoleServer) -> None:
    with browser() as chromium:
        page = chromium.new_page(viewport={"width": 1366, "height": 768}, locale="vi-VN")
        page.goto(f"{console_server.base_url}/console")
        assert page.url.split("?")[0].endswith("/auth/authorize")  # no session: the sign-in form
        assert page.locator("h1").inner_text() == "Đăng nhập"
        screenshot(page, "login")
        page.fill("input[name=username]", "an.op")
        page.fill("input[name=password]", "sai-mật-khẩu-rồi")
        page.click("button[type=submit]")
        assert page.locator("[role=alert]").is_visible()
        page.fill("input[name=username]", "an.op")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/console")
        assert page.locator("h1").inner_text() == "Tổng quan"
        assert page.locator(".person").inner_text() == "Nguyễn Văn An"
        assert page.evaluate("typeof window.htmx") == "object"  # served by carebridge, not a CDN
        page.evaluate("htmx.trigger('#panel', 'every 10s')")  # the panel refreshes in place
        page.locator("#panel td[data-count=failed]").wait_for()
        screenshot(page, "dashboard")
        page.click("a[lang=en]")
        assert page.locator("h1").inner_text() == "Dashboard"
        page.click("header button[type=submit]")
        assert page.locator("h1").inner_text() == "Signed out"
        page.goto(f"{console_server.base_url}/console")
        assert "/auth/authorize" in page.url
