"""Encrypted backup and verified restore of the whole carebridge database.

Why (ISO/IEC 27001:2022 A.8.13 "backup and tested restore"; Circular 46/2018/TT-BYT
Art. 8, replaced by Circular 13/2025/TT-BYT: medical records must be backed up):

* **Consistent copies from the engine's own tools** (:mod:`gateway.backup_engines`):
  ``pg_dump``/``pg_restore`` for PostgreSQL, the online backup API for SQLite.
* **Encrypted at rest, authenticated end to end** (:mod:`gateway.backup_archive`):
  a backup holds every patient's health data, so the plaintext copy only ever
  exists in a private temporary directory; the archive is chunked AES-256-GCM
  that rejects edited, reordered, truncated or extended files.
* **A restore is only done when it is verified.** The archive is decrypted
  and authenticated completely *before* the target database is touched; after
  loading, migrations run to head, erasure tombstones are re-applied
  (:func:`reapply_tombstones`; the restore lists each request id it re-applied) and
  the audit hash chain is recomputed
  in-process (:func:`audit.verify.verify_engine`).  A broken chain fails the
  restore loudly instead of silently bringing back a trail nobody can trust.
* **No restore forgets an erasure by accident** (Law 91/2025/QH15 Art. 14): the
  tombstone file kept outside the database is the only record of erasures made
  after the backup, so a restore without it is refused before anything is touched,
  unless the operator says so explicitly (``tombstone_file=None``,
  ``carebridge restore --without-tombstones``).  ``carebridge serve`` creates the
  file empty, so a missing file means a lost one.

This module is the entry point ``carebridge backup|restore`` (:mod:`gateway.cli_ops`)
calls; it re-exports the key handling and errors that command needs.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Engine

from audit import VerifyResult
from common import KeyMaterialError, KeySource
from fhir_store import StoreCipher
from gateway.backup_archive import (
    BackupError,
    TamperedArchive,
    WrongKey,
    decrypt_stream,
    encrypt_stream,
    key_id,
    load_key,
    load_or_create_key,
)
from gateway.backup_engines import (
    backend_of,
    dump_postgres,
    dump_sqlite,
    load_postgres,
    load_sqlite,
    parsed_url,
)

__all__ = [
    "AuditChainBroken",
    "BackupError",
    "BackupInfo",
    "RestoreInfo",
    "TamperedArchive",
    "TombstonesMissing",
    "WrongKey",
    "backup",
    "key_id",
    "load_key",
    "load_or_create_key",
    "reapply_tombstone_requests",
    "reapply_tombstones",
    "restore",
]


class AuditChainBroken(BackupError):
    """The restored database does not pass the audit chain verification."""


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
    #: request ids of the erasures re-applied, in the tombstone file's order
    reapplied: tuple[str, ...] = ()
    #: the restore ran without the tombstone file, as the operator asked
    tombstones_skipped: bool = False


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
    url = parsed_url(database_url)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with _private_dir() as work:
        plain = work / "dump"
        if backend == "sqlite":
            dump_sqlite(url, plain)
        else:
            dump_postgres(url, plain)
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


def reapply_tombstones(engine: Engine, cipher: StoreCipher, tombstone_file: Path) -> int:
    """Re-apply erasures recorded after the backup was taken; returns how many were applied.

    Why (Law 91/2025/QH15 Art. 14, Decree 356/2025/ND-CP Art. 5): restoring an
    old backup must not bring back personal data a patient had erased.  Erasure
    tombstones (hashes only) are also appended to a file outside the database
    (``tombstone_file``: setting ``CAREBRIDGE_PRIVACY_TOMBSTONE_FILE``, default
    ``var/erasure-tombstones.jsonl``);
    every tombstone the restored database lacks is re-applied by
    :func:`consent.rights.restore.reapply` (links and outbox purged, consents
    withdrawn, held records labelled restricted, tombstone row restored).
    """
    return len(reapply_tombstone_requests(engine, cipher, tombstone_file))


def reapply_tombstone_requests(engine: Engine, cipher: StoreCipher, tombstone_file: Path) -> list[str]:
    """:func:`reapply_tombstones`, returning the request ids re-applied (what restore lists)."""
    from consent import read_tombstone_file, reapply_tombstone_requests
    from crm_bridge import forget_patient_links

    return reapply_tombstone_requests(
        engine, cipher, read_tombstone_file(tombstone_file), forget_links=forget_patient_links
    )


class TombstonesMissing(BackupError):
    """The tombstone file is not there: a restore would bring back what patients had erased."""


def restore(
    database_url: str,
    archive: str | os.PathLike[str],
    key: bytes,
    *,
    audit_key_file: str | os.PathLike[str] | None,
    store_keys: KeySource | str,
    tombstone_file: Path | None,
) -> RestoreInfo:
    """Restore ``archive`` into ``database_url``, migrate, re-apply tombstones, verify the audit chain.

    Stop carebridge first: a running process keeps its own view of the audit
    chain head.  Raises :class:`WrongKey`/:class:`TamperedArchive` before the
    target is touched, :class:`AuditChainBroken` after loading if the restored
    chain does not verify.  The archive holds resource content and HL7 messages
    still sealed under the store keys (``store_keys``, backed up separately):
    a restored database whose keys that file does not hold is reported as an error.
    ``tombstone_file=None`` skips re-applying erasures (the operator said so); a path that
    does not exist raises :class:`TombstonesMissing` before the target is touched.
    """
    from audit import AuditKeys, verify_engine
    from fhir_store import current_revision, make_engine, open_cipher, upgrade
    from gateway.registration import register_all

    backend = backend_of(database_url)
    url = parsed_url(database_url)
    source_path = Path(archive)
    if not source_path.is_file():
        raise BackupError(f"archive {source_path} does not exist")
    if tombstone_file is not None and not tombstone_file.is_file():
        raise TombstonesMissing(
            f"erasure tombstone file {tombstone_file} does not exist: restoring without it would bring back "
            "patients erased after this backup. Restore the file (CAREBRIDGE_PRIVACY_TOMBSTONE_FILE) "
            "or pass --without-tombstones to restore anyway"
        )
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
            load_sqlite(url, plain)
        else:
            warnings += load_postgres(url, plain)
    upgrade(database_url)
    register_all()  # opening the keys may rebuild the blind index: every search parameter counts
    engine = make_engine(database_url, pool_size=1)
    try:
        try:
            cipher = open_cipher(engine, store_keys)
        except KeyMaterialError as exc:
            raise BackupError(f"restored, but the store keys do not match: {exc}") from None
        reapplied = (
            reapply_tombstone_requests(engine, cipher, tombstone_file) if tombstone_file is not None else []
        )
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
    if tombstone_file is None:
        warnings.append("erasure tombstones were not re-applied (--without-tombstones)")
    return RestoreInfo(
        backend,
        revision,
        len(reapplied),
        result,
        tuple(warnings),
        reapplied=tuple(reapplied),
        tombstones_skipped=tombstone_file is None,
    )
