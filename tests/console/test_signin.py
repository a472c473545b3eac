"""Console sign-in: authorization code + PKCE, sessions, CSRF, lockout, roles, headers (issue #19 item 1)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from gateway.auth.authorize import CONSOLE_CLIENT_ID, new_verifier, s256
from gateway.auth.users import UserDirectory
from tests.console.conftest import (
    CHEAP,
    PASSWORD,
    ConsoleServer,
    audit_events,
    csrf_of,
    hidden_fields,
    sign_in,
)
from tests.http.live import serve
from tests.http.test_production_http import production

PAGES = ("/console", "/console/dashboard/panel", "/console/password")


def test_nobody_without_a_session_gets_any_page(browser_client: httpx.Client) -> None:
    for page in PAGES:
        response = browser_client.get(page)
        assert response.status_code == 303 and response.headers["location"] == "/console/login", page
        assert "data-count" not in response.text
        htmx = browser_client.get(page, headers={"HX-Request": "true"})
        assert htmx.status_code == 204 and htmx.headers["HX-Redirect"] == "/console/login"
    browser_client.cookies.set("cb_session", "made-up")
    assert browser_client.get("/console").status_code == 303
    browser_client.cookies.clear()
    assert browser_client.post("/console/logout").status_code == 303  # no session: sign-in, not an action


def test_sign_in_through_pkce_names_the_person_in_the_audit_trail(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    dashboard = sign_in(browser_client, "binh.cs")
    assert dashboard.status_code == 200 and str(dashboard.url).endswith("/console")
    assert "Trần Thị Bình" in dashboard.text and "Tổng quan" in dashboard.text  # Vietnamese first
    cookie = next(c for c in browser_client.cookies.jar if c.name == "cb_session")
    assert cookie.has_nonstandard_attr("HttpOnly")
    raw = dashboard.history[-1].headers.get_list("set-cookie")
    assert any("cb_session=" in c and "SameSite=strict" in c and "HttpOnly" in c for c in raw)
    assert dashboard.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in dashboard.headers["content-security-policy"]

    english = browser_client.get("/console/language/en", follow_redirects=True)
    assert "Dashboard" in english.text and "Tổng quan" not in english.text

    signed_out = browser_client.post("/console/logout", data={"csrf_token": csrf_of(english.text)})
    assert signed_out.status_code == 200
    assert browser_client.get("/console").status_code == 303  # the session is gone
    events = audit_events(console_server)
    logins = [
        (e["subtype"][0]["code"], e["outcome"], e["agent"][0]["who"]["identifier"]["value"])
        for e in events
        if e["subtype"][0]["code"].startswith("console-")
    ]
    assert logins == [
        ("console-login", "0", "Trần Thị Bình (binh.cs)"),
        ("console-logout", "0", "Trần Thị Bình (binh.cs)"),
    ]
    assert PASSWORD not in json.dumps(events)
    login = next(e for e in events if e["subtype"][0]["code"] == "console-login")
    assert login["purposeOfEvent"][0]["coding"][0]["code"] == "HCOMPL"  # the role's default purpose


def test_csrf_is_refused(console_server: ConsoleServer, browser_client: httpx.Client) -> None:
    page = sign_in(browser_client, "an.op")
    assert browser_client.post("/console/logout", data={"csrf_token": "forged"}).status_code == 403
    assert browser_client.post("/console/logout").status_code == 403
    assert browser_client.get("/console").status_code == 200  # still signed in
    ok = browser_client.post("/console/logout", headers={"X-CSRF-Token": csrf_of(page.text)})
    assert ok.status_code == 200
    # login CSRF: a sign-in form posted without this browser's double-submit cookie
    with httpx.Client(base_url=console_server.base_url) as other:
        fields = hidden_fields(other.get("/console/login", follow_redirects=True).text)
    fields.update(username="an.op", password=PASSWORD)
    with httpx.Client(base_url=console_server.base_url) as attacker:
        refused = attacker.post("/auth/authorize", data=fields)
    assert refused.status_code == 403 and "location" not in refused.headers


def test_lockout_and_one_answer_for_every_refusal(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    answers = set()
    for _ in range(5):  # CAREBRIDGE_CONSOLE_LOCKOUT_FAILURES
        wrong = sign_in(browser_client, "dung.bs", "sai-mật-khẩu-rồi")
        assert wrong.status_code == 401
        answers.add(re.sub(r'value="[^"]*"', "", wrong.text))
    locked = sign_in(browser_client, "dung.bs")
    assert locked.status_code == 401
    unknown = sign_in(browser_client, "nobody.here")
    answers |= {re.sub(r'value="[^"]*"', "", r.text) for r in (locked, unknown)}
    assert len(answers) == 1
    refused = [e for e in audit_events(console_server) if e["subtype"][0]["code"] == "console-login"]
    assert len(refused) == 7 and all(e["outcome"] != "0" for e in refused)
    console_server.users.set_active("dung.bs", True)  # an administrator unlocks
    assert sign_in(browser_client, "dung.bs").status_code == 200


def test_pkce_code_is_bound_and_single_use(console_server: ConsoleServer) -> None:
    base = console_server.base_url
    verifier = new_verifier()
    query = {
        "response_type": "code",
        "client_id": CONSOLE_CLIENT_ID,
        "redirect_uri": f"{base}/console/callback",
        "state": "s1",
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    with httpx.Client(base_url=base) as client:
        evil = client.get("/auth/authorize", params={**query, "redirect_uri": "https://evil.example/cb"})
        assert evil.status_code == 400 and "location" not in evil.headers
        plain = client.get("/auth/authorize", params={**query, "code_challenge_method": "plain"})
        assert plain.status_code == 400
        fields = hidden_fields(client.get("/auth/authorize", params=query).text)
        fields.update(username="an.op", password=PASSWORD)
        answer = client.post("/auth/authorize", data=fields)
        assert answer.status_code == 303
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        # the callback with a verifier that does not match the challenge: refused, and the code is gone
        client.cookies.set("cb_pkce", f"s1.{new_verifier()}")
        assert client.get("/console/callback", params={"code": code, "state": "s1"}).status_code == 400
        client.cookies.set("cb_pkce", f"s1.{verifier}")
        again = client.get("/console/callback", params={"code": code, "state": "s1"})
        assert again.status_code == 400 and "cb_session" not in again.headers.get("set-cookie", "")


def test_one_time_password_must_be_changed_first(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    one_time = console_server.users.reset_password("chi.po")
    assert one_time is not None
    page = sign_in(browser_client, "chi.po", one_time)
    assert str(page.url).endswith("/console/password")
    assert browser_client.get("/console").headers["location"] == "/console/password"
    changed = browser_client.post(
        "/console/password",
        data={"csrf_token": csrf_of(page.text), "current": one_time, "new": "một-mật-khẩu-mới-2"},
    )
    assert changed.status_code == 303 and browser_client.get("/console").status_code == 303  # signed out
    assert str(sign_in(browser_client, "chi.po", "một-mật-khẩu-mới-2").url).endswith("/console")


def test_a_disabled_person_loses_the_session_at_once(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    assert sign_in(browser_client, "em.admin").status_code == 200
    console_server.users.set_active("em.admin", False)
    assert browser_client.get("/console").status_code == 303


@pytest.mark.parametrize("backend", ["sqlite"])  # configuration only
def test_production_refuses_admin_and_privacy_officer_without_a_second_factor(
    database_url: str, tmp_path: Path
) -> None:
    with serve(database_url, **CHEAP, **production(tmp_path)) as server:
        runtime = server.runtime
        users = UserDirectory(runtime.engine, runtime.store.cipher, runtime.settings.console)
        users.add("em.admin", "admin", "Hoàng Em", password=PASSWORD)
        users.add("an.op", "operator", "Nguyễn Văn An", password=PASSWORD)
        with httpx.Client(base_url=server.base_url) as client:
            for username, status in (("em.admin", 403), ("an.op", 303)):
                form = client.get("/console/login", follow_redirects=True)
                cookie = form.headers["set-cookie"]
                assert "Secure" in cookie  # always in production mode
                token = cookie.split("cb_login_csrf=", 1)[1].split(";", 1)[0]
                fields = {**hidden_fields(form.text), "username": username, "password": PASSWORD}
                # httpx keeps Secure cookies for https only: the test presents it itself
                client.cookies.set("cb_login_csrf", token)
                answer = client.post("/auth/authorize", data=fields)
                assert answer.status_code == status, username


def _console_routes(console_server: ConsoleServer) -> list[tuple[str, str]]:
    """Every console page and action the app serves (methods, path with sample ids)."""
    from fastapi.routing import APIRoute

    from gateway.http.app import create_app

    app = create_app(console_server.server.runtime)

    def walk(routes: list[Any]) -> list[Any]:  # FastAPI nests included routers
        flat: list[Any] = []
        for route in routes:
            inner = getattr(route, "original_router", None)
            flat.extend(walk(list(inner.routes)) if inner is not None else [route])
        return flat

    found = []
    for route in walk(list(app.routes)):
        if isinstance(route, APIRoute) and route.path.startswith("/console"):
            path = route.path
            for name in route.param_convertors:
                path = path.replace("{" + name + "}", "1" if name.endswith("id") else "x")
            for method in sorted((route.methods or set()) - {"HEAD"}):
                found.append((method, path))
    return found


def test_every_console_route_needs_a_session(console_server: ConsoleServer) -> None:
    routes = _console_routes(console_server)
    assert len(routes) >= 10  # the pages of every slice are found
    open_routes = {("GET", "/console/login"), ("GET", "/console/callback"), ("GET", "/console/language/x")}
    with httpx.Client(base_url=console_server.base_url) as anonymous:
        for method, path in routes:
            if (method, path) in open_routes:
                continue
            response = anonymous.request(method, path)
            assert response.status_code == 303, (method, path, response.status_code)
            assert response.headers["location"] == "/console/login", (method, path)


def test_an_admin_reaches_no_page_with_patient_data(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    from gateway.console.roles import ACTIONS

    sign_in(browser_client, "em.admin")
    patient_pages = [
        path
        for method, path in _console_routes(console_server)
        if method == "GET"
        and path.startswith(("/console/patients", "/console/privacy", "/console/messages", "/console/audit"))
    ]
    assert patient_pages
    for path in patient_pages:
        assert browser_client.get(path).status_code == 403, path
    for action in ("raw-hl7", "patients", "privacy", "audit", "messages"):
        assert "admin" not in ACTIONS[action]
