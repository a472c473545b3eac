"""Issue #16 item 2: the SQLite database, its -wal/-shm files and its directory are owner-only.

Holds the OAuth clients, the audit trail and sealed patient data: another local
account must not be able to copy it (SQLite only; PostgreSQL keeps its own files).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from fhir_store import make_engine, upgrade
from gateway.backup_engines import dump_sqlite, load_sqlite


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_database_and_directory_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, which gave 0644 files before
    try:
        path = tmp_path / "var" / "carebridge.db"
        engine = make_engine(f"sqlite:///{path}", pool_size=1)
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
            conn.execute(text("INSERT INTO t VALUES (1)"))
            wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
            assert wal.exists() and shm.exists()
            assert _mode(wal) == 0o600 and _mode(shm) == 0o600
        engine.dispose()
    finally:
        os.umask(old)
    assert _mode(path) == 0o600
    assert _mode(path.parent) == 0o700


def test_existing_readable_database_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    upgrade(f"sqlite:///{path}")
    path.chmod(0o644)
    make_engine(f"sqlite:///{path}", pool_size=1).dispose()
    assert _mode(path) == 0o600


def test_restored_database_is_private(tmp_path: Path) -> None:
    source = tmp_path / "source.db"
    upgrade(f"sqlite:///{source}")
    dump = tmp_path / "dump"
    dump_sqlite(make_url(f"sqlite:///{source}"), dump)
    dump.chmod(0o644)
    target = tmp_path / "restored" / "carebridge.db"
    old = os.umask(0o022)
    try:
        load_sqlite(make_url(f"sqlite:///{target}"), dump)
    finally:
        os.umask(old)
    assert _mode(target) == 0o600 and _mode(target.parent) == 0o700


def test_key_directories_are_created_private(tmp_path: Path) -> None:
    from audit import AuditKeys
    from common import KeyFile, KeySource
    from gateway.backup_archive import load_or_create_key

    old = os.umask(0o022)
    try:
        KeyFile.load_or_create(KeySource(str(tmp_path / "var" / "store-keys.json")), dict)
        AuditKeys.load_or_create(tmp_path / "audit" / "audit-signing-key.pem")
        load_or_create_key(tmp_path / "backup" / "backup.key")
    finally:
        os.umask(old)
    for name in ("var", "audit", "backup"):
        assert _mode(tmp_path / name) == 0o700, name
