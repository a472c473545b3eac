"""A live carebridge with console users, and a signed-in httpx client (issue #19)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gateway.auth.users import UserDirectory
from tests.http.live import LiveServer, serve

#: Argon2id at its cheapest for tests (production: 64 MiB, 3 passes; CAREBRIDGE_CONSOLE_PASSWORD_*).
CHEAP = {"console_password_memory_kib": 8, "console_password_time_cost": 1}
PASSWORD = "mật-khẩu-đủ-dài-1"
PEOPLE = {
    "an.op": ("operator", "Nguyễn Văn An"),
    "binh.cs": ("compliance_officer", "Trần Thị Bình"),
    "chi.po": ("privacy_officer", "Lê Thị Chi"),
    "dung.bs": ("clinician", "Phạm Văn Dũng"),
    "em.admin": ("admin", "Hoàng Em"),
}


@dataclass
class ConsoleServer:
    server: LiveServer
    users: UserDirectory

    @property
    def base_url(self) -> str:
        return self.server.base_url


def hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', html))


def sign_in(client: httpx.Client, username: str, password: str = PASSWORD, code: str = "") -> httpx.Response:
    """The whole authorization-code + PKCE flow, as a browser follows it."""
    form_page = client.get("/console/login", follow_redirects=True)
    assert form_page.status_code == 200, form_page.text
    fields = hidden_fields(form_page.text)
    fields.update(username=username, password=password, code=code)
    return client.post("/auth/authorize", data=fields, follow_redirects=True)


def csrf_of(html: str) -> str:
    return hidden_fields(html)["csrf_token"]


@pytest.fixture
def console_server(database_url: str) -> Iterator[ConsoleServer]:
    with serve(database_url, **CHEAP) as server:
        runtime = server.runtime
        users = UserDirectory(runtime.engine, runtime.store.cipher, runtime.settings.console)
        for username, (role, name) in PEOPLE.items():
            users.add(username, role, name, password=PASSWORD)
        yield ConsoleServer(server, users)


@pytest.fixture
def browser_client(console_server: ConsoleServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=console_server.base_url, timeout=30) as client:
        yield client


def audit_events(console_server: ConsoleServer) -> list[dict[str, Any]]:
    import json

    from sqlalchemy import select

    from audit.schema import audit_event

    with console_server.server.runtime.engine.connect() as conn:
        return [json.loads(bytes(r[0])) for r in conn.execute(select(audit_event.c.content))]
