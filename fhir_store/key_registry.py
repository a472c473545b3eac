"""Which keys a database's rows are under, and opening the store cipher safely at start.

Why: the keys live outside the database, so the two can drift apart — a
restored database with this morning's key file, a container started without
its secret, a copied key file from another site.  Without a check the store
would start, create a *new* key file, answer every read with a decryption
error and, worse, fail to find existing identifiers through the blind index
and create duplicate patients.  So the ``store_key`` table records the id and
fingerprint (``common.keyring.fingerprint``, never the key) of:

* every content key rows may be sealed under (retired once ``carebridge store
  rewrap`` moved every row off it), and
* the blind-index key the index was built with (exactly one is active).

:func:`open_cipher` (every process, at start) refuses to run when the key
file lacks a registered key or holds a different one, creates the key file
only for a database that has never been keyed, and rebuilds the blind index
once for a database written before blinding existed.
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Connection, Engine, insert, select, text, update

from common import KeyMaterialError, KeySource
from fhir_store.blind_index import has_index_rows, reindex, string_index_missing
from fhir_store.content_cipher import StoreCipher, StoreKeys
from fhir_store.database import writer
from fhir_store.instants import now_us
from fhir_store.schema import store_key

_REGISTRY_LOCK = 0x43425354  # pg_advisory_xact_lock key ("CBST")


def lock_registry(conn: Connection) -> None:
    """Serialize key registration between processes (SQLite: the write lock is already held)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _REGISTRY_LOCK})


def registered(conn: Connection) -> dict[tuple[str, str], tuple[str, int | None]]:
    """``{(purpose, kid): (fingerprint, retired_us)}``."""
    rows = conn.execute(
        select(store_key.c.purpose, store_key.c.kid, store_key.c.fingerprint, store_key.c.retired_us)
    )
    return {(str(r[0]), str(r[1])): (str(r[2]), r[3]) for r in rows}


def register_key(conn: Connection, purpose: str, kid: str, fingerprint: str) -> None:
    conn.execute(
        insert(store_key).values(purpose=purpose, kid=kid, fingerprint=fingerprint, registered_us=now_us())
    )


def active_blind_kid(entries: Mapping[tuple[str, str], tuple[str, int | None]]) -> str | None:
    active = [
        kid for (purpose, kid), (_, retired) in entries.items() if purpose == "blind" and retired is None
    ]
    return active[0] if active else None


def check(keys: StoreKeys, entries: Mapping[tuple[str, str], tuple[str, int | None]]) -> None:
    """Every key the database still needs must be in the key document, with the same fingerprint."""
    held = keys.fingerprints()
    for (purpose, kid), (fingerprint, retired) in sorted(entries.items()):
        if retired is not None:
            continue
        if (purpose, kid) not in held:
            raise KeyMaterialError(
                f"this database has data under {purpose} key {kid!r}, which {keys.location} does not hold: "
                "use the key file this database was written with (restore it from its backup)"
            )
        if held[(purpose, kid)] != fingerprint:
            raise KeyMaterialError(
                f"{purpose} key {kid!r} in {keys.location} is not the key this database was written with "
                f"(fingerprint {held[(purpose, kid)]}, expected {fingerprint})"
            )


def _ensure(conn: Connection, keys: StoreKeys) -> str:
    """Check the keys against the registry, register what is new; returns the active blind key id."""
    entries = registered(conn)
    check(keys, entries)
    held = keys.fingerprints()
    current = ("content", keys.content.current)
    if current not in entries:
        register_key(conn, *current, held[current])
    blind_kid = active_blind_kid(entries)
    if blind_kid is None:
        blind_kid = keys.blind.current
        if ("blind", blind_kid) not in entries:
            register_key(conn, "blind", blind_kid, held[("blind", blind_kid)])
        else:  # a retired key made current again by hand: use it, once the index is rebuilt
            conn.execute(
                update(store_key)
                .where(store_key.c.purpose == "blind", store_key.c.kid == blind_kid)
                .values(retired_us=None)
            )
        if has_index_rows(conn):
            # Written before blind indexes existed (or by a retired key): rebuild once, in this transaction.
            cipher = StoreCipher(keys, blind_kid)
            reindex(conn, cipher.open_resource, cipher.blind)
    elif string_index_missing(conn):
        # Names, addresses and birth dates indexed in clear before migration 0017: rebuild them blinded.
        cipher = StoreCipher(keys, blind_kid)
        reindex(conn, cipher.open_resource, cipher.blind)
    return blind_kid


def open_cipher(engine: Engine, keys_from: KeySource | str) -> StoreCipher:
    """The store cipher for ``engine``'s database, keys checked (and created for a new database).

    Raises :class:`KeyMaterialError` with an operator-readable reason when the
    key file is missing for a keyed database or does not match it.
    """
    with writer(engine).begin() as conn:
        lock_registry(conn)
        source = KeySource.of(keys_from)
        keys = StoreKeys.load(source)
        if keys is None:
            needed = sorted(kid for (_, kid), (_, retired) in registered(conn).items() if retired is None)
            if needed:
                raise KeyMaterialError(
                    f"store key file {source.path} does not exist, but this database has data under keys "
                    f"{', '.join(needed)}: restore the key file (a new key cannot open existing rows)"
                )
            keys = StoreKeys.create(source)
        blind_kid = _ensure(conn, keys)
    return StoreCipher(keys, blind_kid)


def rotate_blind_key(conn: Connection, cipher: StoreCipher) -> tuple[str, str, int]:
    """Rebuild the index under a new blind key on ``conn`` (one transaction); (old, new, resources).

    Offline operation: processes that are running keep blinding with the old
    key until restarted (docs/operations.md).
    """
    lock_registry(conn)
    old = cipher.blind_kid
    new = cipher.keys.add_blind_key()
    fresh = StoreCipher(cipher.keys, new)
    count = reindex(conn, fresh.open_resource, fresh.blind)
    conn.execute(
        update(store_key)
        .where(store_key.c.purpose == "blind", store_key.c.kid == old)
        .values(retired_us=now_us())
    )
    register_key(conn, "blind", new, cipher.keys.fingerprints()[("blind", new)])
    cipher.use_blind_key(new)
    return old, new, count
