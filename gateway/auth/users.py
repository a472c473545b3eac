"""People who sign in to the console: accounts, Argon2id passwords, TOTP, lockout (issue #19 item 1).

Why: Circular 13/2025/TT-BYT and ISO/IEC 27001:2022 A.5.16/A.8.5 want individual,
verified users, so the audit trail can name a person, not a shared system client.

- Passwords are hashed with Argon2id (RFC 9106), a memory-hard function, with the
  parameters kept in each hash (PHC string), so a cost raised later applies to new
  hashes without breaking old ones; a hash made at a lower cost is re-made at the
  current one on the next good sign-in.  Hashing is CPU- and memory-heavy: the HTTP
  layer calls :meth:`UserDirectory.authenticate` in a worker thread, never on the loop.
- A password set by the command line without ``--password-stdin`` is a one-time
  password: the account must choose its own at first sign-in.
- The second factor is TOTP (RFC 6238, 30 s steps, one step of clock drift either
  way); a code is accepted once (§5.2: the last used step is stored).  Its shared
  secret is sealed under the store's content key, never in clear in the database.
- ``lockout_failures`` wrong passwords or codes in a row lock the account for
  ``lockout_s``; the answer to a refused sign-in never says which part was wrong,
  and an unknown username costs the same hash as a known one (no account oracle).
- Every change bumps ``auth_revision`` in its transaction, like OAuth clients, so
  sessions of a disabled or demoted person end in every process within seconds.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pyotp
from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, insert, select, update

from common import ConsoleSettings, InvalidInput, NotFound, Unauthenticated, VersionConflict
from fhir_store import StoreCipher, for_writing, now_us
from gateway.auth.schema import APP_USER_TOTP_SEALED, app_user
from gateway.auth.state import bump_revision

#: Roles of people (``gateway.auth.scopes`` gives each its ceiling): an integration engineer,
#: the compliance and privacy officers, clinicians (read only) and administrators (users and
#: configuration, no patient data).
PEOPLE_ROLES = ("operator", "compliance_officer", "privacy_officer", "clinician", "admin")
#: Roles whose accounts need a second factor in production mode (issue #19 item 1).
SECOND_FACTOR_ROLES = frozenset({"admin", "privacy_officer"})
_USERNAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")
_REFUSED = "wrong username, password or code, or the account is locked or disabled"
TOTP_ISSUER = "carebridge"


@dataclass(frozen=True)
class User:
    username: str
    display_name: str
    email: str | None
    role: str
    active: bool
    must_change_password: bool
    totp_enabled: bool
    failed_logins: int
    locked_until_us: int

    def locked(self, now: int) -> bool:
        return self.locked_until_us > now

    @property
    def label(self) -> str:
        """How the audit trail names the person: display name and username."""
        return f"{self.display_name} ({self.username})"


def _hasher(time_cost: int, memory_kib: int) -> PasswordHasher:
    return PasswordHasher(
        time_cost=time_cost,
        memory_cost=memory_kib,
        parallelism=1,  # one core per sign-in: the reference host has two
        type=Type.ID,
    )


@lru_cache(maxsize=8)
def _dummy_hash(time_cost: int, memory_kib: int) -> str:
    """A hash of a random password at these parameters, made on first need, once per process.

    Verifying an unknown username against it costs what verifying a real account costs (no
    user enumeration by timing, OWASP ASVS V2.2).  It is made lazily because an Argon2id hash at
    the default cost is deliberately expensive (docs/benchmarks.md, "Design figures"): every start
    of the server and of every CLI command paid for it before any sign-in needed it.
    """
    return _hasher(time_cost, memory_kib).hash(secrets.token_urlsafe(16))


def _user(row: Any) -> User:
    return User(
        username=row.username,
        display_name=row.display_name,
        email=row.email,
        role=row.role,
        active=row.active,
        must_change_password=row.must_change_password,
        totp_enabled=row.totp_secret is not None,
        failed_logins=row.failed_logins,
        locked_until_us=row.locked_until_us,
    )


class UserDirectory:
    """The ``app_user`` table behind the console and ``carebridge users``."""

    def __init__(self, engine: Engine, cipher: StoreCipher, settings: ConsoleSettings) -> None:
        self.engine = engine
        self.cipher = cipher
        self.settings = settings
        self.hasher = _hasher(settings.password_time_cost, settings.password_memory_kib)

    # -- administration ---------------------------------------------------------------

    def add(
        self,
        username: str,
        role: str,
        display_name: str,
        *,
        email: str | None = None,
        password: str | None = None,
    ) -> tuple[User, str | None]:
        """Create an account; without ``password`` a one-time password is made and returned."""
        if not _USERNAME.match(username):
            raise InvalidInput(
                "a username is 2-64 lower-case letters, digits, '.', '_' or '-'", location="username"
            )
        if role not in PEOPLE_ROLES:
            raise InvalidInput(f"role must be one of {', '.join(PEOPLE_ROLES)}", location="role")
        if not display_name.strip():
            raise InvalidInput("a display name is required", location="display_name")
        one_time = None if password is not None else secrets.token_urlsafe(12)
        chosen = password if password is not None else one_time
        assert chosen is not None
        if password is not None:
            self.check_password(username, password)
        now = now_us()
        with for_writing(self.engine).begin() as conn:
            if conn.execute(select(app_user.c.username).where(app_user.c.username == username)).first():
                raise VersionConflict(f"user '{username}' already exists", location="username")
            conn.execute(
                insert(app_user).values(
                    username=username,
                    display_name=display_name.strip(),
                    email=email,
                    role=role,
                    password_hash=self.hasher.hash(chosen),
                    must_change_password=one_time is not None,
                    totp_secret=None,
                    totp_last_step=None,
                    active=True,
                    failed_logins=0,
                    locked_until_us=0,
                    created_us=now,
                    updated_us=now,
                )
            )
            bump_revision(conn)
        return self.get(username), one_time

    def get(self, username: str) -> User:
        with self.engine.connect() as conn:
            row = conn.execute(select(app_user).where(app_user.c.username == username)).first()
        if row is None:
            raise NotFound(f"no user '{username}'", location="username")
        return _user(row)

    def list(self) -> list[User]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(app_user).order_by(app_user.c.username)).all()
        return [_user(row) for row in rows]

    def _change(self, username: str, **values: Any) -> None:
        with for_writing(self.engine).begin() as conn:
            changed = conn.execute(
                update(app_user).where(app_user.c.username == username).values(updated_us=now_us(), **values)
            )
            if not changed.rowcount:
                raise NotFound(f"no user '{username}'", location="username")
            bump_revision(conn)

    def set_active(self, username: str, active: bool) -> None:
        """Disable (sessions end within ``CAREBRIDGE_AUTH_REFRESH_S``) or enable; enabling also unlocks."""
        extra: dict[str, Any] = {"failed_logins": 0, "locked_until_us": 0} if active else {}
        self._change(username, active=active, **extra)

    def reset_password(self, username: str, password: str | None = None) -> str | None:
        """Set a password (``None``: a one-time password, returned) and unlock the account."""
        if password is not None:
            self.check_password(username, password)
        chosen = password if password is not None else secrets.token_urlsafe(12)
        self._change(
            username,
            password_hash=self.hasher.hash(chosen),
            must_change_password=password is None,
            failed_logins=0,
            locked_until_us=0,
        )
        return None if password is not None else chosen

    def enrol_totp(self, username: str) -> str:
        """A new TOTP secret (the old one stops working); returns the ``otpauth://`` URI, shown once."""
        secret = pyotp.random_base32()
        self.get(username)
        self._change(
            username,
            totp_secret=APP_USER_TOTP_SEALED.seal(self.cipher, (username,), secret),
            totp_last_step=None,
        )
        return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=TOTP_ISSUER)

    def check_password(self, username: str, password: str) -> None:
        """The password rule (length; not the username), raised as a 400 naming ``password``."""
        if len(password) < self.settings.password_min_length:
            raise InvalidInput(
                f"a password needs at least {self.settings.password_min_length} characters",
                location="password",
            )
        if password.casefold() == username.casefold():
            raise InvalidInput("a password must not be the username", location="password")

    # -- sign-in ------------------------------------------------------------------------

    def authenticate(self, username: str, password: str, code: str | None = None) -> User:
        """The person, if the password (and the TOTP code when enrolled) is right; else 401.

        Blocking and deliberately costly (one Argon2id verification): call it in a thread.
        """
        now = now_us()
        with self.engine.connect() as conn:
            row = conn.execute(select(app_user).where(app_user.c.username == username)).first()
        if row is None:
            self._verify(
                _dummy_hash(self.settings.password_time_cost, self.settings.password_memory_kib), password
            )  # the same cost as a known account
            raise Unauthenticated(_REFUSED)
        user = _user(row)
        if not user.active or user.locked(now):
            self._verify(row.password_hash, password)
            raise Unauthenticated(_REFUSED)
        step = None
        ok = self._verify(row.password_hash, password)
        if ok and row.totp_secret is not None:
            step = self._totp_step(row, code, now)
            ok = step is not None
        if not ok:
            self._failed(username, now)
            raise Unauthenticated(_REFUSED)
        values: dict[str, Any] = {"failed_logins": 0, "locked_until_us": 0}
        if step is not None:
            values["totp_last_step"] = step
        if self.hasher.check_needs_rehash(row.password_hash):
            values["password_hash"] = self.hasher.hash(password)
        with for_writing(self.engine).begin() as conn:
            conn.execute(update(app_user).where(app_user.c.username == username).values(**values))
        return user

    def change_password(self, username: str, current: str, new: str, code: str | None = None) -> None:
        """The person's own change (after a one-time password): the current one is checked first."""
        self.authenticate(username, current, code)
        if new == current:
            raise InvalidInput("the new password must differ from the current one", location="password")
        self.check_password(username, new)
        self._change(username, password_hash=self.hasher.hash(new), must_change_password=False)

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def _totp_step(self, row: Any, code: str | None, now: int) -> int | None:
        """The 30 s step ``code`` belongs to (now, or one step either side), once only."""
        if not code or not code.isdigit():
            return None
        secret = APP_USER_TOTP_SEALED.open(self.cipher, (row.username,), row.totp_secret)
        assert secret is not None
        totp = pyotp.TOTP(secret)
        current = now // 1_000_000 // totp.interval
        for step in (current, current - 1, current + 1):
            if secrets.compare_digest(totp.generate_otp(step), code):
                if row.totp_last_step is not None and step <= row.totp_last_step:
                    return None  # replayed
                return step
        return None

    def _failed(self, username: str, now: int) -> None:
        """Count a failure in the database (every HTTP worker sees it); lock at the threshold."""
        where = app_user.c.username == username
        with for_writing(self.engine).begin() as conn:
            conn.execute(update(app_user).where(where).values(failed_logins=app_user.c.failed_logins + 1))
            failures = conn.execute(select(app_user.c.failed_logins).where(where)).scalar_one()
            if failures >= self.settings.lockout_failures:
                locked_until = now + self.settings.lockout_s * 1_000_000
                conn.execute(
                    update(app_user).where(where).values(failed_logins=0, locked_until_us=locked_until)
                )
