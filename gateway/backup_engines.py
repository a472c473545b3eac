"""Copying a database out to a file and back in, with each engine's own consistent tools.

Why these tools (ISO/IEC 27001:2022 A.8.13 "backup and tested restore"):
PostgreSQL is dumped with ``pg_dump -Fc`` (one MVCC snapshot, custom format)
and restored with ``pg_restore --clean --if-exists --single-transaction``, so a
failed restore leaves the target untouched.  SQLite is copied with its online
backup API (``sqlite3.Connection.backup``), which is consistent even while
carebridge writes, unlike copying the file next to its WAL.

The files written and read here are plaintext: :mod:`gateway.backup` keeps them
in a private temporary directory and encrypts them
(:mod:`gateway.backup_archive`) before anything leaves it.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
from pathlib import Path

from psycopg.conninfo import make_conninfo
from sqlalchemy.engine import URL, make_url

from common import child_environment
from fhir_store import normalize_url, private_sqlite_file
from gateway.backup_archive import BACKEND_CODES, BackupError

# The NOLOGIN role migration 0002 grants rights to; a dump's GRANTs name it.
APP_ROLE = "carebridge_app"


def parsed_url(database_url: str) -> URL:
    return make_url(normalize_url(database_url))


def backend_of(database_url: str) -> str:
    name = parsed_url(database_url).get_backend_name()
    if name not in BACKEND_CODES:
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
    password = {} if url.password is None else {"PGPASSWORD": str(url.password)}
    return make_conninfo(**params), child_environment(**password)


def _run(args: list[str], env: dict[str, str], what: str) -> None:
    result = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        raise BackupError(f"{what} failed (exit {result.returncode}): {detail}")


def dump_sqlite(url: URL, target: Path) -> None:
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


def dump_postgres(url: URL, target: Path) -> None:
    conninfo, env = libpq_target(url)
    _run([pg_tool("pg_dump"), "-Fc", "--no-password", "-f", str(target), "-d", conninfo], env, "pg_dump")


def load_sqlite(url: URL, plain: Path) -> None:
    source = sqlite3.connect(plain)
    try:
        try:
            check = source.execute("PRAGMA integrity_check").fetchone()
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"the archive does not contain a valid SQLite database: {exc}") from None
        if check is None or check[0] != "ok":
            raise BackupError(f"the SQLite database in the archive fails its integrity check: {check}")
        path = _sqlite_path(url)
        private_sqlite_file(path)  # 0600 in a 0700 directory, like a database carebridge creates
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


def load_postgres(url: URL, plain: Path) -> list[str]:
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
