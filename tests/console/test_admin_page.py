"""The administrator's page at /console/admin: people, OAuth clients, HL7 senders (issue #19 item 2)."""

from __future__ import annotations

import re

import httpx

from gateway.auth.clients import ClientRegistry, secret_matches
from gateway.console.roles import may
from gateway.sender_registry import SenderRegistry
from tests.console.conftest import PASSWORD, ConsoleServer, audit_events, csrf_of, sign_in

ADMIN = "Hoàng Em (em.admin)"


def security_events(console_server: ConsoleServer) -> list[tuple[str, str, str, str]]:
    return [
        (
            e["subtype"][0]["code"],
            e["agent"][0]["who"]["identifier"]["value"],
            e["outcome"],
            e.get("outcomeDesc", ""),
        )
        for e in audit_events(console_server)
        if e["type"]["code"] == "110113"
    ]


def test_admin_adds_a_person_who_signs_in_with_the_one_time_password(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    page = sign_in(browser_client, "em.admin")
    admin = browser_client.get("/console/admin")
    assert admin.status_code == 200
    assert 'data-user="chi.po"' in admin.text and "Lê Thị Chi" in admin.text
    added = browser_client.post(
        "/console/admin/users",
        data={
            "csrf_token": csrf_of(page.text),
            "username": "giang.po",
            "display_name": "Võ Thị Giang",
            "role": "privacy_officer",
            "email": "",
        },
    )
    assert added.status_code == 200
    one_time = re.search(r'<p class="secret">([^<]+)</p>', added.text)
    assert one_time is not None
    assert 'data-user="giang.po"' in added.text
    again = browser_client.get("/console/admin")
    assert one_time.group(1) not in again.text  # shown once
    duplicate = browser_client.post(
        "/console/admin/users",
        data={"csrf_token": csrf_of(page.text), "username": "giang.po", "display_name": "X", "role": "admin"},
    )
    assert duplicate.status_code == 409 and 'role="alert"' in duplicate.text

    with httpx.Client(base_url=console_server.base_url, timeout=30) as giang:
        first = sign_in(giang, "giang.po", password=one_time.group(1))
        assert first.status_code == 200 and str(first.url).endswith("/console/password")

    assert ("users-add", ADMIN, "0", "user giang.po: added with role privacy_officer") in security_events(
        console_server
    )
    assert ("users-add", ADMIN, "4", "user giang.po: refused (username)") in security_events(console_server)
    assert one_time.group(1) not in str(audit_events(console_server))


def test_disabling_a_person_ends_their_session_and_is_audited(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    with httpx.Client(base_url=console_server.base_url, timeout=30) as chi:
        assert sign_in(chi, "chi.po").status_code == 200
        assert chi.get("/console/privacy").status_code == 200
        page = sign_in(browser_client, "em.admin")
        disabled = browser_client.post(
            "/console/admin/users/chi.po/disable", data={"csrf_token": csrf_of(page.text)}
        )
        assert disabled.status_code == 303
        listing = browser_client.get("/console/admin")
        row = listing.text.split('data-user="chi.po"')[1].split("</tr>")[0]
        assert "đã khoá" in row
        assert chi.get("/console/privacy").status_code == 303  # the session ended: back to sign-in
        assert "Lê Thị Chi" not in sign_in(chi, "chi.po").text  # and no new one

        enabled = browser_client.post(
            "/console/admin/users/chi.po/enable", data={"csrf_token": csrf_of(page.text)}
        )
        assert enabled.status_code == 303
        reset = browser_client.post(
            "/console/admin/users/chi.po/reset-password", data={"csrf_token": csrf_of(page.text)}
        )
        assert reset.status_code == 200 and '<p class="secret">' in reset.text
        assert sign_in(chi, "chi.po", password=PASSWORD).status_code == 401  # the old password is gone
        own = browser_client.post(
            "/console/admin/users/em.admin/disable", data={"csrf_token": csrf_of(page.text)}
        )
        assert own.status_code == 409  # an admin cannot lock themself out
    events = security_events(console_server)
    assert ("users-disable", ADMIN, "0", "user chi.po: disabled") in events
    assert ("users-enable", ADMIN, "0", "user chi.po: enabled") in events
    assert ("users-reset-password", ADMIN, "0", "user chi.po: password reset") in events


def test_admin_adds_and_disables_oauth_clients_and_lists_senders(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    runtime = console_server.server.runtime
    SenderRegistry(runtime.engine).add("HIS_A", "BVDK", networks=["10.1.0.0/16"])
    page = sign_in(browser_client, "em.admin")
    added = browser_client.post(
        "/console/admin/clients",
        data={"csrf_token": csrf_of(page.text), "client_id": "crm-zalo", "role": "crm", "scopes": ""},
    )
    assert added.status_code == 200
    secret = re.search(r'<p class="secret">([^<]+)</p>', added.text)
    assert secret is not None
    registry = ClientRegistry(runtime.engine)
    stored = registry.get("crm-zalo")
    assert stored is not None and stored.active and stored.secret_hash is not None
    assert secret_matches(secret.group(1), stored.secret_hash)
    disabled = browser_client.post(
        "/console/admin/clients/crm-zalo/disable", data={"csrf_token": csrf_of(page.text)}
    )
    assert disabled.status_code == 303
    stored = registry.get("crm-zalo")
    assert stored is not None and not stored.active
    listing = browser_client.get("/console/admin")
    assert (
        "HIS_A" in listing.text
        and "10.1.0.0/16" in listing.text
        and 'href="/console/senders"' in listing.text
    )
    events = security_events(console_server)
    assert ("clients-add", ADMIN, "0", "client crm-zalo: added with role crm") in events
    assert ("clients-disable", ADMIN, "0", "client crm-zalo: disabled") in events
    assert secret.group(1) not in str(audit_events(console_server))


def test_an_admin_sees_no_patient_data_and_csrf_is_refused(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    page = sign_in(browser_client, "em.admin")
    request_page = "/console/privacy/00000000-0000-4000-8000-000000000000"
    for url in ("/console/privacy", "/console/privacy?mrn=BN1", request_page, f"{request_page}/letter"):
        assert browser_client.get(url).status_code == 403, url
    assert not may("admin", "patients") and not may("admin", "raw-hl7")  # the patient pages' actions
    assert (
        browser_client.post("/console/privacy/file", data={"csrf_token": csrf_of(page.text)}).status_code
        == 403
    )
    forms = {
        "/console/admin/users": {"username": "x.y", "display_name": "X", "role": "admin"},
        "/console/admin/users/chi.po/disable": {},
        "/console/admin/users/chi.po/reset-password": {},
        "/console/admin/clients": {"client_id": "c1", "role": "crm"},
        "/console/admin/clients/c1/disable": {},
    }
    for url, form in forms.items():
        assert browser_client.post(url, data=form).status_code == 403, url
        assert browser_client.post(url, data={**form, "csrf_token": "forged"}).status_code == 403, url
    assert "x.y" not in browser_client.get("/console/admin").text  # nothing changed
    with httpx.Client(base_url=console_server.base_url, timeout=30) as operator:
        sign_in(operator, "an.op")
        assert operator.get("/console/admin").status_code == 403
    with httpx.Client(base_url=console_server.base_url, timeout=30) as nobody:
        assert nobody.get("/console/admin").status_code == 303
