"""POST /auth/token against a live server (issue #16 item 5), on SQLite and PostgreSQL.

Attack: 300 wrong secrets in a row were answered without throttling or audit; unknown ids
answered without hashing (a timing oracle); scrypt ran on the event loop; HTTP Basic
client authentication was refused.  Each test shows one of those now fails.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote_plus

import httpx
import orjson
import pytest

import gateway.auth.clients as clients_module
from audit import search_audit
from gateway.auth.clients import ClientRegistry
from gateway.auth.login import HASH_NICENESS
from tests.http.live import LiveServer, serve
from tests.support import TEST_SECRET_LOG2N

SECOND = 1_000_000


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000 * SECOND

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextmanager
def _serve(database_url: str, clock: Clock | None = None, **overrides: Any) -> Iterator[LiveServer]:
    with serve(database_url, auth_secret_log2n=TEST_SECRET_LOG2N, **overrides) as live:
        if clock is not None:
            live.app.state.token_login.throttle.clock = clock
        yield live


@pytest.fixture
def live(database_url: str, clock: Clock) -> Iterator[LiveServer]:
    with _serve(
        database_url,
        clock,
        auth_throttle_client_failures=3,
        auth_throttle_address_failures=50,
        auth_throttle_lock_s=60,
        auth_throttle_lock_max_s=600,
    ) as server:
        yield server


def register(live: LiveServer, client_id: str, role: str = "his_integration") -> str:
    secret = ClientRegistry(live.runtime.engine, secret_log2n=TEST_SECRET_LOG2N).add(client_id, role)
    assert secret
    return secret


def post_token(live: LiveServer, client_id: str, secret: str, **extra: str) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret, **extra}
    return httpx.post(f"{live.base_url}/auth/token", data=form, timeout=30)


def basic(client_id: str, secret: str) -> str:
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def login_events(live: LiveServer) -> list[dict[str, Any]]:
    live.runtime.audit.flush()
    with live.runtime.engine.connect() as conn:
        rows, _ = search_audit(conn, type="110114", count=1000, newest_first=False)
    return [orjson.loads(row) for row in rows]


def who(event: dict[str, Any]) -> tuple[str, str, str]:
    agent = event["agent"][0]
    return agent["who"]["identifier"]["value"], agent["network"]["address"], event["outcome"]


def test_client_secret_basic_is_accepted_and_wrong_basic_refused(live: LiveServer) -> None:
    client_id = "his:khoa nội/1"  # needs form-urlencoding inside Basic (RFC 6749 §2.3.1)
    secret = register(live, client_id)
    url = f"{live.base_url}/auth/token"
    grant = {"grant_type": "client_credentials"}
    ok = httpx.post(url, data=grant, headers={"Authorization": basic(client_id, secret)}, timeout=30)
    assert ok.status_code == 200, ok.text
    assert ok.json()["token_type"].lower() == "bearer"
    for authorization in (basic(client_id, secret + "x"), "Basic !!notbase64", basic("nobody", secret)):
        refused = httpx.post(url, data=grant, headers={"Authorization": authorization}, timeout=30)
        assert refused.status_code == 401
        assert refused.json()["error"] == "invalid_client"
        assert refused.headers["WWW-Authenticate"].startswith("Basic ")
    # two methods at once is an invalid request (RFC 6749 §2.3)
    both = httpx.post(
        url, data={**grant, "client_secret": secret}, headers={"Authorization": basic(client_id, secret)}
    )
    assert both.status_code == 400 and both.json()["error"] == "invalid_request"
    discovery = httpx.get(f"{live.base_url}/.well-known/smart-configuration").json()
    assert "client_secret_basic" in discovery["token_endpoint_auth_methods_supported"]


def test_failures_lock_the_client_id_then_the_lock_expires_and_escalates(
    live: LiveServer, clock: Clock
) -> None:
    secret = register(live, "his-a")
    assert [post_token(live, "his-a", "wrong").status_code for _ in range(3)] == [401, 401, 401]
    locked = post_token(live, "his-a", secret)  # the right secret too: a lock is a lock
    assert locked.status_code == 429
    assert locked.headers["Retry-After"] == "60"
    assert locked.json()["error"] == "temporarily_unavailable"
    clock.now += 30 * SECOND
    assert post_token(live, "his-a", secret).headers["Retry-After"] == "30"
    clock.now += 31 * SECOND
    assert post_token(live, "his-a", secret).status_code == 200
    # a success does not forget earlier locks: the next one is twice as long
    assert [post_token(live, "his-a", "wrong").status_code for _ in range(3)] == [401, 401, 401]
    assert post_token(live, "his-a", secret).headers["Retry-After"] == "120"
    clock.now += 121 * SECOND
    assert post_token(live, "his-a", secret).status_code == 200


def test_unknown_ids_are_locked_like_known_ones(live: LiveServer) -> None:
    register(live, "his-b")
    for client_id in ("his-b", "no-such-client"):
        codes = [post_token(live, client_id, "wrong").status_code for _ in range(4)]
        assert codes == [401, 401, 401, 429]


def test_failures_lock_the_source_address(database_url: str, clock: Clock) -> None:
    with _serve(
        database_url, clock, auth_throttle_client_failures=100, auth_throttle_address_failures=4
    ) as live:
        secret = register(live, "his-c")
        assert {post_token(live, f"guess-{n}", "wrong").status_code for n in range(4)} == {401}
        refused = post_token(live, "his-c", secret)  # another client, the same address
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) == 60
        clock.now += 61 * SECOND
        assert post_token(live, "his-c", secret).status_code == 200


def test_every_outcome_is_audited_with_client_and_address(live: LiveServer) -> None:
    secret = register(live, "his-d")
    assert post_token(live, "his-d", secret).status_code == 200
    assert post_token(live, "his-d", "wrong").status_code == 401
    assert post_token(live, "ghost", "wrong").status_code == 401
    anonymous = httpx.post(f"{live.base_url}/auth/token", data={"grant_type": "client_credentials"})
    assert anonymous.status_code == 401
    for _ in range(3):
        post_token(live, "ghost", "wrong")
    events = [who(e) for e in login_events(live)]
    assert ("his-d", "127.0.0.1", "0") in events
    assert ("his-d", "127.0.0.1", "12") in events
    assert ("ghost", "127.0.0.1", "12") in events
    assert ("unknown", "127.0.0.1", "12") in events
    assert ("ghost", "127.0.0.1", "4") in events  # the 429
    texts = " ".join(orjson.dumps(e).decode() for e in login_events(live))
    assert secret not in texts and "wrong" not in texts  # secrets never enter the trail


def test_unknown_and_secretless_ids_cost_the_same_scrypt(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ClientRegistry(live.runtime.engine).add("jwt-only", "his_integration", with_secret=False)
    secret = register(live, "his-e")
    checked: list[str] = []
    real = clients_module.secret_matches

    def counting(given: str, stored: str) -> bool:
        checked.append(stored)
        return real(given, stored)

    monkeypatch.setattr(clients_module, "secret_matches", counting)
    assert post_token(live, "his-e", "wrong").status_code == 401
    assert post_token(live, "no-such-client", "wrong").status_code == 401
    assert post_token(live, "jwt-only", "wrong").status_code == 401
    assert post_token(live, "", secret).status_code == 401
    assert len(checked) == 4  # the verifier ran for every attempt, registered or not
    registered = checked[0].split("$")[1]
    assert all(stored.split("$")[1] == registered for stored in checked)  # same scrypt parameters


def test_hashing_runs_off_the_event_loop_with_bounded_concurrency(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with _serve(database_url, auth_hash_concurrency=2, auth_throttle_client_failures=100) as live:
        secret = register(live, "his-f")
        lock = threading.Lock()
        running, peak, on_loop = 0, 0, []
        niceness: list[int] = []
        real = clients_module.secret_matches

        def observed(given: str, stored: str) -> bool:
            nonlocal running, peak
            try:
                asyncio.get_running_loop()
                on_loop.append(True)
            except RuntimeError:
                pass
            niceness.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.05)  # keep the slot busy so that parallel requests overlap
            with lock:
                running -= 1
            return real(given, stored)

        monkeypatch.setattr(clients_module, "secret_matches", observed)
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda n: post_token(live, "his-f", secret).status_code, range(8)))
        assert codes == [200] * 8
        assert not on_loop
        assert 1 <= peak <= 2
        assert set(niceness) == {min(19, os.getpriority(os.PRIO_PROCESS, 0) + HASH_NICENESS)}
