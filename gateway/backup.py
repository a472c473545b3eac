"""Encrypted backup and verified restore of the whole carebridge database.

Why (ISO/IEC 27001:2022 A.8.13 "backup and tested restore"; Circular 46/2018/TT-BYT
Art. 8, replaced by Circular 13/2025/TT-BYT: medical records must be backed up):

* **Consistent copies from the engine's own tools.** PostgreSQL is dumped with
  ``pg_dump -Fc`` (one MVCC snapshot, custom format) and restored with
  ``pg_restore --clean --if-exists --single-transaction``, so a failed restore
  leaves the target untouched.  SQLite is copied with its online backup API
  (``sqlite3.Connection.backup``), which is consistent even while carebridge
  writes, unlike copying the file next to its WAL.
* **Encrypted at rest, authenticated end to end.** A backup holds every
  patient's health data (sensitive data under Law 91/2025/QH15 Art. 9), so it
  never exists unencrypted outside a private temporary directory.  The archive
  is AES-256-GCM in fixed-size chunks (the "STREAM" construction of Hoang,
  Reyhanitabar, Rogaway and Vizár, as used by age and Tink): every chunk's
  nonce is ``prefix || counter || last-flag`` and the header is authenticated
  as associated data, so edited, reordered, truncated or extended archives
  are all rejected, and memory use stays flat for large databases.
* **A restore is only done when it is verified.** The archive is decrypted
  and authenticated completely *before* the target database is touched; after
  loading, migrations run to head, erasure tombstones are re-applied
  (:func:`reapply_tombstones`) and the audit hash chain is recomputed
  in-process (:func:`audit.verify.verify_engine`).  A broken chain fails the
  restore loudly instead of silently bringing back a trail nobody can trust.

Archive layout (all integers big-endian)::

    header  = magic "CBBACKUP" | version u8 (=1) | backend u8 (1 sqlite, 2 postgresql)
              | chunk_size u32 | nonce_prefix 7 bytes | key_id 8 bytes
    chunk*  = length u32 | AES-256-GCM(key, nonce_prefix | counter u32 | last u8, plaintext, aad=header)

``key_id`` is a fingerprint of the key (a keyed-context SHA-256, not the key) so a
wrong key is reported as "wrong key" rather than as tampering.

The key file holds 32 random bytes (raw, or 64 hex characters so it can be pasted
from a password vault); :func:`load_or_create_key` creates it with mode 0600.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import sqlite3
import struct
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from psycopg.conninfo import make_conninfo
from sqlalchemy import Engine
from sqlalchemy.engine import URL, make_url

from audit.verify import VerifyResult
from common.keyring import KeyMaterialError
from fhir_store.content_cipher import StoreCipher

MAGIC = b"CBBACKUP"
VERSION = 1
KEY_BYTES = 32
CHUNK_SIZE = 1 << 20  # 1 MiB of plaintext per authenticated chunk
MAX_CHUNK_SIZE = 64 << 20  # refuse absurd headers instead of allocating them
_HEADER = struct.Struct(">8sBBI7s8s")
_LENGTH = struct.Struct(">I")
_TAG_BYTES = 16
_BACKENDS = {"sqlite": 1, "postgresql": 2}
_BACKEND_NAMES = {code: name for name, code in _BACKENDS.items()}
DEFAULT_KEY_FILE = "var/backup.key"
KEY_FILE_ENV = "CAREBRIDGE_BACKUP_KEY_FILE"
# The NOLOGIN role migration 0002 grants rights to; a dump's GRANTs name it.
APP_ROLE = "carebridge_app"


class BackupError(Exception):
    """A backup or restore could not be done; the message says why, for an operator."""


class WrongKey(BackupError):
    """The archive was written under a different backup key."""


class TamperedArchive(BackupError):
    """The archive is not a carebridge backup, or was edited, truncated or extended."""


class AuditChainBroken(BackupError):
    """The restored database does not pass the audit chain verification."""


# -- keys -------------------------------------------------------------------------------------


def key_id(key: bytes) -> str:
    """A fingerprint that identifies the key without revealing it (printed, stored in headers)."""
    return hashlib.sha256(b"carebridge backup key id\0" + key).hexdigest()[:16]


def load_key(path: str | os.PathLike[str]) -> bytes:
    """Read a key file: 32 raw bytes, or 64 hex characters (surrounding whitespace ignored)."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise BackupError(
            f"backup key file {file} does not exist; a new key cannot open an existing archive "
            "(restore the key file from where you keep its copy)"
        ) from None
    if len(data) == KEY_BYTES:
        return data
    text = data.strip()
    if len(text) == 2 * KEY_BYTES:
        with contextlib.suppress(ValueError):
            return bytes.fromhex(text.decode("ascii"))
    raise BackupError(f"backup key file {file} must hold 32 bytes (raw) or 64 hex characters")


def load_or_create_key(path: str | os.PathLike[str]) -> tuple[bytes, bool]:
    """The key from ``path``, creating 32 random bytes with mode 0600 if missing; (key, created)."""
    file = Path(path)
    if file.exists():
        return load_key(file), False
    file.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(KEY_BYTES)
    # O_EXCL: two processes racing to create the key must not end up with different keys.
    try:
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return load_key(file), False
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key, True


# -- the archive format -----------------------------------------------------------------------


def _nonce(prefix: bytes, counter: int, last: bool) -> bytes:
    return prefix + struct.pack(">IB", counter, 1 if last else 0)


def encrypt_stream(
    source: BinaryIO, target: BinaryIO, key: bytes, backend: str, *, chunk_size: int = CHUNK_SIZE
) -> int:
    """Encrypt ``source`` into ``target`` (header + chunks); returns the plaintext size."""
    aead = AESGCM(key)
    header = _HEADER.pack(
        MAGIC, VERSION, _BACKENDS[backend], chunk_size, secrets.token_bytes(7), bytes.fromhex(key_id(key))
    )
    prefix = header[14:21]
    target.write(header)
    total, counter = 0, 0
    chunk = source.read(chunk_size)
    while True:
        following = source.read(chunk_size)  # read ahead: the last chunk is flagged in its nonce
        last = not following
        sealed = aead.encrypt(_nonce(prefix, counter, last), chunk, header)
        target.write(_LENGTH.pack(len(sealed)) + sealed)
        total += len(chunk)
        if last:
            return total
        if counter == 0xFFFFFFFF:
            raise BackupError("database too large for one archive (2^32 chunks)")
        counter += 1
        chunk = following


def read_header(source: BinaryIO) -> tuple[bytes, str, int, str]:
    """(raw header, backend, chunk size, key id) of an archive; raises TamperedArchive."""
    header = source.read(_HEADER.size)
    if len(header) != _HEADER.size or not header.startswith(MAGIC):
        raise TamperedArchive("not a carebridge backup archive (bad magic)")
    _magic, version, backend, chunk_size, _prefix, kid = _HEADER.unpack(header)
    if version != VERSION:
        raise TamperedArchive(f"unsupported archive version {version} (this carebridge reads {VERSION})")
    if backend not in _BACKEND_NAMES or not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise TamperedArchive("archive header is corrupt")
    return header, _BACKEND_NAMES[backend], chunk_size, kid.hex()


def decrypt_stream(source: BinaryIO, target: BinaryIO, key: bytes) -> str:
    """Authenticate and decrypt an archive into ``target``; returns its backend name.

    Raises :class:`WrongKey` or :class:`TamperedArchive`; ``target`` then holds
    partial plaintext which the caller must discard.
    """
    header, backend, chunk_size, kid = read_header(source)
    if kid != key_id(key):
        raise WrongKey(f"wrong backup key: the archive was written with key {kid}, this key is {key_id(key)}")
    aead, prefix, counter = AESGCM(key), header[14:21], 0
    while True:
        raw_length = source.read(_LENGTH.size)
        if len(raw_length) != _LENGTH.size:
            raise TamperedArchive("archive is truncated (the final chunk is missing)")
        (length,) = _LENGTH.unpack(raw_length)
        if not _TAG_BYTES <= length <= chunk_size + _TAG_BYTES:
            raise TamperedArchive(f"archive is corrupt or tampered (chunk {counter} has a bad length)")
        sealed = source.read(length)
        if len(sealed) != length:
            raise TamperedArchive("archive is truncated")
        plain: bytes | None = None
        last = False
        for flag in (False, True):
            with contextlib.suppress(InvalidTag):
                plain = aead.decrypt(_nonce(prefix, counter, flag), sealed, header)
                last = flag
                break
        if plain is None:
            raise TamperedArchive(f"archive is corrupt or tampered (chunk {counter} fails authentication)")
        target.write(plain)
        if last:
            if source.read(1):
                raise TamperedArchive("archive has data after its final chunk (tampered)")
            return backend
        counter += 1


# -- databases --------------------------------------------------------------------------------


def _url(database_url: str) -> URL:
    from fhir_store.database import normalize_url

    return make_url(normalize_url(database_url))


def backend_of(database_url: str) -> str:
    name = _url(database_url).get_backend_name()
    if name not in _BACKENDS:
        raise BackupError(f"backups support sqlite and postgresql, not {name}")
    return name


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:" or url.database.startswith("file:"):
        raise BackupError("an in-memory or URI-style SQLite database cannot be backed up")
    return Path(url.database)


def pg_tool(name: str) -> str:
    """``pg_dump``/``pg_restore`` from PATH, else the newest /usr/lib/postgresql/*/bin (Debian layout)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        raise BackupError(
            f"{name} not found on PATH or in /usr/lib/postgresql/*/bin (install postgresql-client)"
        )
    return str(candidates[-1])


def libpq_target(url: URL) -> tuple[str, dict[str, str]]:
    """(conninfo without the password, environment with PGPASSWORD) for the PostgreSQL tools.

    The password goes through the environment, never the command line, which
    other local users can read in ``ps``.
    """
    params: dict[str, str] = {}
    if url.host:
        params["host"] = url.host
    if url.port:
        params["port"] = str(url.port)
    if url.username:
        params["user"] = url.username
    if url.database:
        params["dbname"] = url.database
    for name, value in url.query.items():
        params[name] = value if isinstance(value, str) else value[-1]
    env = dict(os.environ)
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    return make_conninfo(**params), env


def _run(args: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise BackupError(f"{what} failed (exit {result.returncode}): {detail}")


def _dump_sqlite(url: URL, target: Path) -> None:
    path = _sqlite_path(url)
    if not path.exists():
        raise BackupError(f"SQLite database {path} does not exist")
    source = sqlite3.connect(path, timeout=30)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
        copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal beside it
    finally:
        copy.close()
        source.close()


def _dump_postgres(url: URL, target: Path) -> None:
    conninfo, env = libpq_target(url)
    _run([pg_tool("pg_dump"), "-Fc", "--no-password", "-f", str(target), "-d", conninfo], env, "pg_dump")


def _load_sqlite(url: URL, plain: Path) -> None:
    source = sqlite3.connect(plain)
    try:
        try:
            check = source.execute("PRAGMA integrity_check").fetchone()
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"the archive does not contain a valid SQLite database: {exc}") from None
        if check is None or check[0] != "ok":
            raise BackupError(f"the SQLite database in the archive fails its integrity check: {check}")
        path = _sqlite_path(url)
        path.parent.mkdir(parents=True, exist_ok=True)
        target = sqlite3.connect(path, timeout=30)
        try:
            source.backup(target)  # replaces every page of the target, atomically for its readers
        finally:
            target.close()
    finally:
        source.close()


def _ensure_app_role(url: URL) -> bool:
    """Create the role the dump's GRANTs name, as migration 0002 does; False if impossible."""
    import psycopg

    conninfo, env = libpq_target(url)
    password = env.get("PGPASSWORD")
    with psycopg.connect(conninfo, password=password, autocommit=True, connect_timeout=30) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone():
            return True
        with contextlib.suppress(psycopg.errors.InsufficientPrivilege, psycopg.errors.DuplicateObject):
            conn.execute(f"CREATE ROLE {APP_ROLE} NOLOGIN")
        return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone() is not None


def _load_postgres(url: URL, plain: Path) -> list[str]:
    conninfo, env = libpq_target(url)
    warnings: list[str] = []
    args = [
        pg_tool("pg_restore"),
        "--clean",
        "--if-exists",
        "--single-transaction",  # all or nothing: a failure leaves the target as it was
        "--exit-on-error",
        "--no-owner",  # objects belong to whoever restores (run restores as the schema owner)
        "--no-password",
        "-d",
        conninfo,
    ]
    if not _ensure_app_role(url):
        args.append("--no-privileges")
        warnings.append(
            f"role {APP_ROLE} does not exist and could not be created (no CREATEROLE): "
            "grants were not restored; create the role and re-run the migration grants"
        )
    _run([*args, str(plain)], env, "pg_restore")
    return warnings


# -- backup and restore -----------------------------------------------------------------------


@dataclass(frozen=True)
class BackupInfo:
    backend: str
    output: Path
    plaintext_bytes: int
    archive_bytes: int
    key_id: str


@dataclass(frozen=True)
class RestoreInfo:
    backend: str
    schema_revision: str | None
    tombstones: int
    audit: VerifyResult
    warnings: tuple[str, ...] = ()


@contextlib.contextmanager
def _private_dir() -> Iterator[Path]:
    """A 0700 temporary directory: the only place a plaintext copy ever exists, removed after."""
    with tempfile.TemporaryDirectory(prefix="carebridge-backup-") as name:
        os.chmod(name, 0o700)
        yield Path(name)


def backup(database_url: str, output: str | os.PathLike[str], key: bytes) -> BackupInfo:
    """Write an encrypted archive of the database at ``database_url`` to ``output``.

    The archive is written next to ``output`` and renamed into place, so an
    interrupted backup never leaves a truncated file under the final name.
    """
    backend = backend_of(database_url)
    url = _url(database_url)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with _private_dir() as work:
        plain = work / "dump"
        if backend == "sqlite":
            _dump_sqlite(url, plain)
        else:
            _dump_postgres(url, plain)
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as sink, plain.open("rb") as source:
                size = encrypt_stream(source, sink, key, backend)
                sink.flush()
                os.fsync(sink.fileno())
            os.replace(partial, out)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    return BackupInfo(backend, out, size, out.stat().st_size, key_id(key))


def reapply_tombstones(engine: Engine, cipher: StoreCipher) -> int:
    """Re-apply erasures recorded after the backup was taken; returns how many were applied.

    Why (Law 91/2025/QH15 Art. 14, Decree 356/2025/ND-CP Art. 5): restoring an
    old backup must not bring back personal data a patient had erased.  Erasure
    tombstones (hashes only) are also appended to a file outside the database
    (``CAREBRIDGE_PRIVACY_TOMBSTONE_FILE``, default ``var/erasure-tombstones.jsonl``);
    every tombstone the restored database lacks is re-applied by
    :func:`consent.rights.restore.reapply` (links and outbox purged, consents
    withdrawn, held records labelled restricted, tombstone row restored).
    """
    from consent.rights.restore import reapply

    return reapply(engine, cipher)


def restore(
    database_url: str,
    archive: str | os.PathLike[str],
    key: bytes,
    *,
    audit_key_file: str | os.PathLike[str] | None,
    store_key_file: str,
) -> RestoreInfo:
    """Restore ``archive`` into ``database_url``, migrate, re-apply tombstones, verify the audit chain.

    Stop carebridge first: a running process keeps its own view of the audit
    chain head.  Raises :class:`WrongKey`/:class:`TamperedArchive` before the
    target is touched, :class:`AuditChainBroken` after loading if the restored
    chain does not verify.  The archive holds resource content and HL7 messages
    still sealed under the store keys (``store_key_file``, backed up separately):
    a restored database whose keys that file does not hold is reported as an error.
    """
    from audit.checkpoints import AuditKeys
    from audit.verify import verify_engine
    from fhir_store.database import make_engine
    from fhir_store.key_registry import open_cipher
    from fhir_store.migrations import current_revision, upgrade

    backend = backend_of(database_url)
    url = _url(database_url)
    source_path = Path(archive)
    if not source_path.is_file():
        raise BackupError(f"archive {source_path} does not exist")
    keys = None
    if audit_key_file is not None and Path(audit_key_file).exists():
        keys = AuditKeys.load(audit_key_file)
    warnings: list[str] = []
    with _private_dir() as work:
        plain = work / "dump"
        with source_path.open("rb") as source, plain.open("wb") as sink:
            archived = decrypt_stream(source, sink, key)
        if archived != backend:
            raise BackupError(f"the archive holds a {archived} database; the target is {backend}")
        if backend == "sqlite":
            _load_sqlite(url, plain)
        else:
            warnings += _load_postgres(url, plain)
    upgrade(database_url)
    engine = make_engine(database_url, pool_size=1)
    try:
        try:
            cipher = open_cipher(engine, store_key_file)
        except KeyMaterialError as exc:
            raise BackupError(f"restored, but the store keys do not match: {exc}") from None
        tombstones = reapply_tombstones(engine, cipher)
        result = verify_engine(engine, keys)
        revision = current_revision(engine)
    finally:
        engine.dispose()
    if keys is None and result.events:
        raise AuditChainBroken(
            f"restored, but the audit chain cannot be verified: no audit key file at {audit_key_file} "
            "(restore the audit key file too, then run `carebridge audit verify`)"
        )
    if not result.ok:
        raise AuditChainBroken(f"restored, but the audit chain is broken: {result.line()}")
    return RestoreInfo(backend, revision, tombstones, result, tuple(warnings))
