"""Failed client authentications at the token endpoint: counted, then locked out for a while.

Why: a token endpoint that answers every guess lets anyone try secrets without limit
(OWASP ASVS 4.0 V2.2.1 anti-automation; NIST SP 800-63B §5.2.2 rate limiting;
ISO/IEC 27001:2022 A.8.5 secure authentication).  Failures are counted per *client id*
(the id as submitted, registered or not, so a lock reveals nothing about which ids exist)
and per *source address*.  ``client_failures`` / ``address_failures`` failures within
``window_s`` lock that key: a request naming a locked id or coming from a locked address
gets 429 with ``Retry-After`` (RFC 6585 §4, RFC 9110 §10.2.3) and no secret check at
all, whether or not its secret is right.  The first lock lasts ``lock_s``; each further
lock of the same key doubles, up to ``lock_max_s``; a key with neither failure nor lock for
``lock_max_s`` starts again from the first lock.  A success clears the failures of its client id, but neither
its lock level (a client under attack stays under escalating locks while its owner keeps
logging in) nor its address's count (an attacker holding one valid secret must not be
able to reset the count of the address guessing others).

The counts are rows of ``auth_throttle`` so every HTTP worker process of a deployment
enforces the same limits.  :func:`next_state` is the rule, pure; :class:`Throttle` applies
it in one write transaction per failure (rows locked in key order, so two workers
failing at once neither lose a count nor deadlock).  ``clock`` returns microseconds
(injectable for tests).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from common import AuthSettings
from fhir_store import for_reading, for_writing, is_sqlite, now_us
from gateway.auth.schema import auth_throttle

_US = 1_000_000
#: The longest text of a key's value: longer ids cannot be registered (oauth_client.client_id).
_MAX_VALUE = 150


@dataclass(frozen=True)
class KeyState:
    failures: int = 0
    window_start_us: int = 0
    locked_until_us: int = 0
    lock_level: int = 0
    last_failure_us: int = 0


@dataclass(frozen=True)
class Limits:
    window_us: int
    lock_us: int
    lock_max_us: int

    @classmethod
    def of(cls, settings: AuthSettings) -> Limits:
        return cls(
            settings.throttle_window_s * _US,
            settings.throttle_lock_s * _US,
            settings.throttle_lock_max_s * _US,
        )


def next_state(state: KeyState, now: int, max_failures: int, limits: Limits) -> KeyState:
    """The state of a key after one more failure at ``now``."""
    level = state.lock_level
    quiet_since = max(state.last_failure_us, state.locked_until_us)
    if quiet_since and now - quiet_since >= limits.lock_max_us:
        level = 0  # no failure and no lock for lock_max: escalation forgotten
    failures, window_start = state.failures, state.window_start_us
    if now - window_start >= limits.window_us:
        failures, window_start = 0, now
    failures += 1
    locked_until = state.locked_until_us
    if failures >= max_failures:
        locked_until = now + min(limits.lock_us << min(level, 32), limits.lock_max_us)
        level, failures, window_start = level + 1, 0, now
    return KeyState(failures, window_start, locked_until, level, now)


def client_key(client_id: str) -> str:
    return f"client:{client_id[:_MAX_VALUE]}"


def address_key(address: str) -> str:
    return f"address:{address[:_MAX_VALUE]}"


@dataclass(frozen=True)
class Lock:
    """A refusal: which key is locked and for how many more whole seconds."""

    key: str
    retry_after_s: int


@dataclass(frozen=True)
class Check:
    """``lock``: the refusal, if any; ``counted``: the client id has failures (a success clears them)."""

    lock: Lock | None
    counted: bool


class Throttle:
    def __init__(self, engine: Engine, settings: AuthSettings, *, clock: Callable[[], int] = now_us) -> None:
        self.engine = engine
        self.settings = settings
        self.limits = Limits.of(settings)
        self.clock = clock

    def _keys(self, client_id: str, address: str) -> dict[str, int]:
        """Keys of a request and the failures that lock each (an empty id counts by address only)."""
        keys = {address_key(address): self.settings.throttle_address_failures}
        if client_id:
            keys[client_key(client_id)] = self.settings.throttle_client_failures
        return keys

    def check(self, client_id: str, address: str) -> Check:
        """Whether this request is refused (the longest lock applies) and whether its id has failures."""
        now = self.clock()
        keys = list(self._keys(client_id, address))
        with for_reading(self.engine).connect() as conn:
            rows = conn.execute(
                select(auth_throttle.c.key, auth_throttle.c.locked_until_us, auth_throttle.c.failures).where(
                    auth_throttle.c.key.in_(keys)
                )
            ).all()
        mine = client_key(client_id) if client_id else None
        counted = any(str(row.key) == mine and int(row.failures) > 0 for row in rows)
        locks = [(str(row.key), int(row.locked_until_us)) for row in rows if int(row.locked_until_us) > now]
        if not locks:
            return Check(None, counted)
        key, until = max(locks, key=lambda lock: lock[1])
        return Check(Lock(key, -(-(until - now) // _US)), counted)

    def failed(self, client_id: str, address: str) -> Lock | None:
        """Count one failure for the id and the address; the lock it starts, if any."""
        now = self.clock()
        keys = self._keys(client_id, address)
        started: list[Lock] = []
        with for_writing(self.engine).begin() as conn:
            states = self._lock_rows(conn, sorted(keys), now)
            for key in sorted(keys):
                before = states[key]
                after = next_state(before, now, keys[key], self.limits)
                conn.execute(
                    update(auth_throttle)
                    .where(auth_throttle.c.key == key)
                    .values(
                        failures=after.failures,
                        window_start_us=after.window_start_us,
                        locked_until_us=after.locked_until_us,
                        lock_level=after.lock_level,
                        last_failure_us=after.last_failure_us,
                    )
                )
                if after.locked_until_us > now and after.lock_level > before.lock_level:
                    started.append(Lock(key, -(-(after.locked_until_us - now) // _US)))
            # Forget keys quiet for longer than the longest lock (sprayed ids must not pile up).
            conn.execute(
                delete(auth_throttle).where(
                    auth_throttle.c.last_failure_us < now - self.limits.lock_max_us,
                    auth_throttle.c.locked_until_us < now - self.limits.lock_max_us,
                )
            )
        return max(started, key=lambda lock: lock.retry_after_s) if started else None

    def succeeded(self, client_id: str) -> None:
        """A correct secret clears its client id's failures (not its lock level, nor its address's)."""
        with for_writing(self.engine).begin() as conn:
            conn.execute(
                update(auth_throttle)
                .where(auth_throttle.c.key == client_key(client_id), auth_throttle.c.failures > 0)
                .values(failures=0)
            )

    def _lock_rows(self, conn: Connection, keys: Sequence[str], now: int) -> dict[str, KeyState]:
        """Create missing rows, then lock all of them (``FOR UPDATE``; SQLite: BEGIN IMMEDIATE)."""
        insert = sqlite_insert if is_sqlite(self.engine) else pg_insert
        conn.execute(
            insert(auth_throttle)
            .values(
                [
                    {
                        "key": key,
                        "failures": 0,
                        "window_start_us": now,
                        "locked_until_us": 0,
                        "lock_level": 0,
                        "last_failure_us": 0,
                    }
                    for key in keys
                ]
            )
            .on_conflict_do_nothing(index_elements=["key"])
        )
        rows = conn.execute(
            select(auth_throttle)
            .where(auth_throttle.c.key.in_(keys))
            .order_by(auth_throttle.c.key)
            .with_for_update()
        ).all()
        return {
            str(r.key): KeyState(
                r.failures, r.window_start_us, r.locked_until_us, r.lock_level, r.last_failure_us
            )
            for r in rows
        }
