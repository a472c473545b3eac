"""Console sessions: an opaque cookie, its hash in the database, idle and absolute timeouts, CSRF.

Why server-side sessions rather than a token in the browser: a session is ended
at once by sign-out, by disabling the person or by the idle timeout (ISO/IEC
27001:2022 A.8.5, OWASP ASVS V3.3), and the cookie is ``HttpOnly`` (no script
reads it), ``SameSite=Strict`` (no other site sends it) and ``Secure`` whenever
the console is served over https (always in production mode).  The database
keeps only the cookie's SHA-256.  Each session has a synchronizer CSRF token
(OWASP CSRF cheat sheet) that every state-changing request must echo, in the
form field or the ``X-CSRF-Token`` header htmx sends.

Every request reads the person's row too, so a disabled or demoted person's
session stops working at their next click, in every process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, delete, insert, select, update

from common import ConsoleSettings
from fhir_store import for_writing, now_us
from gateway.auth.schema import app_user, console_session

COOKIE = "cb_session"
#: ``last_seen`` is written at most this often: one write per click would serialise every
#: page view behind the SQLite write lock.
_TOUCH_EVERY_US = 30 * 1_000_000


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    username: str
    display_name: str
    role: str
    csrf_token: str
    must_change_password: bool

    @property
    def label(self) -> str:
        """How the audit trail names the person (issue #19: display name and username)."""
        return f"{self.display_name} ({self.username})"

    def csrf_ok(self, presented: str | None) -> bool:
        return presented is not None and hmac.compare_digest(presented, self.csrf_token)


class SessionStore:
    def __init__(self, engine: Engine, settings: ConsoleSettings) -> None:
        self.engine = engine
        self.settings = settings

    def start(self, username: str) -> str:
        """A new session for ``username``; returns the cookie value (shown to nobody else)."""
        token = secrets.token_urlsafe(32)
        now = now_us()
        oldest = now - self.settings.session_max_s * 1_000_000
        with for_writing(self.engine).begin() as conn:
            conn.execute(delete(console_session).where(console_session.c.created_us < oldest))
            conn.execute(
                insert(console_session).values(
                    id_hash=_digest(token),
                    username=username,
                    csrf_token=secrets.token_urlsafe(32),
                    created_us=now,
                    last_seen_us=now,
                )
            )
        return token

    def find(self, token: str | None) -> Session | None:
        """The live session of a cookie, or None (unknown, idle too long, too old, person disabled)."""
        if not token:
            return None
        now = now_us()
        query = (
            select(console_session, app_user.c.display_name, app_user.c.role, app_user.c.active)
            .add_columns(app_user.c.must_change_password)
            .join(app_user, app_user.c.username == console_session.c.username)
            .where(console_session.c.id_hash == _digest(token))
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None or not row.active:
            return None
        idle = now - row.last_seen_us > self.settings.idle_timeout_s * 1_000_000
        old = now - row.created_us > self.settings.session_max_s * 1_000_000
        if idle or old:
            self.end(token)
            return None
        if now - row.last_seen_us > _TOUCH_EVERY_US:
            with for_writing(self.engine).begin() as conn:
                conn.execute(
                    update(console_session)
                    .where(console_session.c.id_hash == _digest(token))
                    .values(last_seen_us=now)
                )
        return Session(row.username, row.display_name, row.role, row.csrf_token, row.must_change_password)

    def end(self, token: str) -> None:
        with for_writing(self.engine).begin() as conn:
            conn.execute(delete(console_session).where(console_session.c.id_hash == _digest(token)))

    def end_all(self, username: str) -> None:
        """Sign a person out everywhere (password change, disable)."""
        with for_writing(self.engine).begin() as conn:
            conn.execute(delete(console_session).where(console_session.c.username == username))
