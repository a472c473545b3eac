"""Debian's chromium driven by Playwright (issue #19): never a downloaded browser.

``make test`` installs the Debian ``chromium`` package when it is missing
(``make chromium``); Playwright's own browser download is never used: the
browser is started by ``executable_path``.  The flags keep a headless chromium
from reaching for Google's services on a closed network (they would be refused,
many at a time) and give it a fresh profile per launch.

Screenshots go to ``build/test-artifacts/console/`` (kept by CI as artifacts);
``make console-screenshots`` writes them to ``docs/console/`` for docs/console.md.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "build" / "test-artifacts" / "console"
DOCS_SHOTS = ROOT / "docs" / "console"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        raise RuntimeError("Debian's chromium is not installed: run `make chromium` (make test does)")
    return found


@contextmanager
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()


def screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as a test artifact (and for the docs when asked)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if os.environ.get("CONSOLE_DOCS_SCREENSHOTS") == "1":
        DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, DOCS_SHOTS / f"{name}.png")
    return path


def sign_in_as(page: Page, base_url: str, username: str, password: str) -> None:
    """Through the sign-in form, as a person would; ends on the dashboard."""
    page.goto(f"{base_url}/console")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url("**/console")
