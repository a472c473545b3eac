"""The throttling rule (pure) and its database state, shared by processes, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import func, select

from common import AuthSettings
from fhir_store import make_engine
from gateway.auth.schema import auth_throttle
from gateway.auth.throttle import KeyState, Limits, Throttle, address_key, client_key, next_state

S = 1_000_000
LIMITS = Limits(window_us=60 * S, lock_us=60 * S, lock_max_us=300 * S)
SETTINGS = AuthSettings(
    throttle_window_s=60,
    throttle_client_failures=3,
    throttle_address_failures=5,
    throttle_lock_s=60,
    throttle_lock_max_s=300,
)


def fail(state: KeyState, at_s: int, times: int = 1) -> KeyState:
    for _ in range(times):
        state = next_state(state, at_s * S, 3, LIMITS)
    return state


def test_failures_outside_the_window_do_not_add_up() -> None:
    state = fail(KeyState(), 0, 2)
    state = fail(state, 61)  # a new window: 1 failure, not 3
    assert state.failures == 1 and state.locked_until_us == 0


def test_locks_double_up_to_the_maximum_and_are_forgotten_after_a_quiet_spell() -> None:
    state, lengths = KeyState(), []
    at = 0
    for _ in range(5):
        state = fail(state, at, 3)
        lengths.append((state.locked_until_us - at * S) // S)
        at = state.locked_until_us // S + 1
    assert lengths == [60, 120, 240, 300, 300]
    quiet = fail(state, at + 300, 3)  # nothing for lock_max: back to the first lock
    assert (quiet.locked_until_us // S) - (at + 300) == 60


def test_state_is_shared_by_every_throttle_on_the_database(database_url: str) -> None:
    now = [1_000 * S]
    engines = [make_engine(database_url), make_engine(database_url)]  # two "processes"
    first, second = (Throttle(engine, SETTINGS, clock=lambda: now[0]) for engine in engines)
    try:
        assert first.failed("his", "10.0.0.1") is None
        assert second.failed("his", "10.0.0.1") is None
        lock = first.failed("his", "10.0.0.2")
        assert lock is not None and lock.key == client_key("his") and lock.retry_after_s == 60
        check = second.check("his", "10.0.0.9")
        assert check.lock is not None and check.lock.retry_after_s == 60
        assert second.check("other", "10.0.0.9").lock is None
        now[0] += 61 * S
        assert second.check("his", "10.0.0.9").lock is None
    finally:
        for engine in engines:
            engine.dispose()


def test_concurrent_failures_are_all_counted(database_url: str) -> None:
    engine = make_engine(database_url)
    throttle = Throttle(engine, AuthSettings(throttle_client_failures=1000, throttle_address_failures=1000))
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: throttle.failed(f"id-{n % 3}", "10.0.0.1"), range(40)))
        with engine.connect() as conn:
            rows = dict(conn.execute(select(auth_throttle.c.key, auth_throttle.c.failures)).all())
        assert rows[address_key("10.0.0.1")] == 40
        assert sum(rows[client_key(f"id-{n}")] for n in range(3)) == 40
    finally:
        engine.dispose()


def test_success_clears_the_client_failures_not_the_address(database_url: str) -> None:
    now = [1_000 * S]
    engine = make_engine(database_url)
    throttle = Throttle(engine, SETTINGS, clock=lambda: now[0])
    try:
        throttle.failed("his", "10.0.0.1")
        throttle.failed("his", "10.0.0.1")
        assert throttle.check("his", "10.0.0.1").counted
        throttle.succeeded("his")
        assert not throttle.check("his", "10.0.0.1").counted
        assert throttle.failed("his", "10.0.0.1") is None  # 1 of 3 again
        lock = throttle.failed("someone-else", "10.0.0.1")  # the address's 4th ...
        assert lock is None
        lock = throttle.failed("a-third", "10.0.0.1")  # ... and 5th failure lock it
        assert lock is not None and lock.key == address_key("10.0.0.1")
    finally:
        engine.dispose()


def test_quiet_keys_are_pruned(database_url: str) -> None:
    now = [1_000 * S]
    engine = make_engine(database_url)
    throttle = Throttle(engine, SETTINGS, clock=lambda: now[0])
    try:
        for n in range(10):
            throttle.failed(f"sprayed-{n}", f"10.0.1.{n}")
        now[0] += 301 * S
        throttle.failed("late", "10.0.2.1")
        with engine.connect() as conn:
            assert conn.execute(select(func.count()).select_from(auth_throttle)).scalar_one() == 2
    finally:
        engine.dispose()
