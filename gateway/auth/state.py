"""What every process knows about clients and signing keys, kept current within seconds.

Why (issue #16; ISO/IEC 27001:2022 A.5.18: access rights removed when no
longer needed; RFC 7519 §4.1.4 lets a server refuse a token before ``exp``): a
disabled, removed, re-keyed or demoted client must lose access in every running
process (the HTTP workers of ``CAREBRIDGE_HTTP_WORKERS`` included) without a
restart, and a rotated signing key must sign from then on everywhere.  Each
change bumps the one-row counter ``auth_revision`` in its own transaction
(:func:`bump_revision`); a process compares the counter with the one its
snapshot was built from at most every ``CAREBRIDGE_AUTH_REFRESH_S`` seconds (one
primary-key read) and rebuilds the snapshot only when it moved.

Private signing keys are sealed under the store's content key
(``SIGNING_KEY_SEALED``: AES-256-GCM, key id as associated data), so a copy of
the database alone cannot sign a token (issue #16 item 2).  Keys written in clear
by older versions are sealed the first time a process loads them.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from joserfc.jwk import ECKey, KeySet
from sqlalchemy import Connection, Engine, insert, select, update

from fhir_store import StoreCipher, for_writing, now_us
from gateway.auth.schema import SIGNING_KEY_SEALED, auth_revision, oauth_client, signing_key

ALGORITHM = "ES256"


def bump_revision(conn: Connection) -> None:
    """Tell every process that a client or a key changed (call inside the change's transaction)."""
    bumped = conn.execute(
        update(auth_revision).where(auth_revision.c.id == 1).values(revision=auth_revision.c.revision + 1)
    )
    if not bumped.rowcount:
        conn.execute(insert(auth_revision).values(id=1, revision=1))


def read_revision(conn: Connection) -> int:
    value = conn.execute(select(auth_revision.c.revision).where(auth_revision.c.id == 1)).scalar()
    return int(value or 0)


@dataclass(frozen=True)
class ClientState:
    """The facts a token is checked against on every request."""

    role: str
    generation: int
    active: bool
    patient_id: str | None


@dataclass(frozen=True)
class Snapshot:
    revision: int
    clients: dict[str, ClientState]
    keys: KeySet  # the signing key and retired keys whose tokens may still be valid
    signing: ECKey


def insert_signing_key(conn: Connection, cipher: StoreCipher) -> str:
    kid = uuid.uuid4().hex[:16]
    key = ECKey.generate_key("P-256", parameters={"kid": kid})
    pem = key.as_pem(private=True).decode("ascii")
    sealed = SIGNING_KEY_SEALED.seal(cipher, (kid,), pem)
    conn.execute(
        insert(signing_key).values(kid=kid, algorithm=ALGORITHM, private_key=sealed, created_us=now_us())
    )
    return kid


class AuthState:
    """The per-process snapshot of client states and signing keys (thread-safe)."""

    def __init__(self, engine: Engine, cipher: StoreCipher, *, lifetime_s: int, refresh_s: float) -> None:
        self.engine = engine
        self.cipher = cipher
        self.lifetime_s = lifetime_s
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._checked = 0.0

    def current(self, *, check: bool = False) -> Snapshot:
        """The snapshot, rebuilt when the database's revision moved since the last check.

        ``check`` compares the revision now, whenever the last check was (a token signed
        by a key this process has not loaded yet).
        """
        with self._lock:
            now = time.monotonic()
            if self._snapshot is not None and not check and now - self._checked < self.refresh_s:
                return self._snapshot
            self._checked = now
            if self._snapshot is not None:
                with self.engine.connect() as conn:
                    if read_revision(conn) == self._snapshot.revision:
                        return self._snapshot
            self._snapshot = self._load()
            return self._snapshot

    def reload(self) -> Snapshot:
        """Rebuild now (after this process changed something itself)."""
        with self._lock:
            self._checked = time.monotonic()
            self._snapshot = self._load()
            return self._snapshot

    def _load(self) -> Snapshot:
        with for_writing(self.engine).begin() as conn:
            revision = read_revision(conn)
            rows = conn.execute(select(signing_key).order_by(signing_key.c.created_us)).all()
            changed = False
            if not any(r.retired_us is None for r in rows):
                insert_signing_key(conn, self.cipher)
                changed = True
            for row in rows:  # written in clear by an older version: seal it now
                if SIGNING_KEY_SEALED.is_clear(row.private_key):
                    sealed = SIGNING_KEY_SEALED.seal(self.cipher, (row.kid,), row.private_key)
                    conn.execute(
                        update(signing_key).where(signing_key.c.kid == row.kid).values(private_key=sealed)
                    )
                    changed = True
            if changed:
                bump_revision(conn)
                revision = read_revision(conn)
                rows = conn.execute(select(signing_key).order_by(signing_key.c.created_us)).all()
            clients = {
                r.client_id: ClientState(r.role, int(r.generation), bool(r.active), r.patient_id)
                for r in conn.execute(select(oauth_client)).all()
            }
        cutoff = now_us() - self.lifetime_s * 1_000_000
        keys: list[Any] = []
        for row in rows:
            if row.retired_us and row.retired_us <= cutoff:
                continue
            pem = SIGNING_KEY_SEALED.open(self.cipher, (row.kid,), row.private_key)
            assert pem is not None
            keys.append(ECKey.import_key(pem, {"kid": row.kid}))
        active = [r.kid for r in rows if r.retired_us is None][-1]
        signing = next(k for k in keys if k.kid == active)
        return Snapshot(revision, clients, KeySet(keys), signing)
