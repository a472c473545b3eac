"""Throwaway PostgreSQL clusters for tests and benchmarks.

``PostgresCluster.start(durable=...)`` runs ``initdb`` into a fresh temporary directory and starts a
server listening only on 127.0.0.1 at a free port, with a private Unix-socket directory, so
several clusters (one per pytest-xdist worker, a benchmark, a developer shell) never collide.
When running as root the directory is handed to the ``postgres`` user (``nobody`` if that user
does not exist) and the server binaries run as that user, because PostgreSQL refuses to run
as root.  ``stop()`` shuts the server down (``pg_ctl stop -m fast``) and removes the directory.

Durable or fast, chosen by every caller:

- ``durable=True`` (the default, and what benchmarks use): ``fsync``, ``synchronous_commit`` and
  ``full_page_writes`` on, so a commit costs what it costs in production and a crash of the
  server loses nothing committed.
- ``durable=False`` (the functional test suite): all three off.  Commits are still atomic and
  visible to every other session at once -- only a crash of the *server* or the machine could
  lose them, and a throwaway cluster never outlives one.  Tests that kill a process and then
  check what survived use a durable cluster anyway (``durable`` marker in tests/conftest.py).

``create_database(name, template=...)`` clones a database (``CREATE DATABASE ... TEMPLATE``):
the suite migrates one template per cluster and clones it per test, which is much cheaper
than running every migration again (PostgreSQL docs, "Template Databases").

Standalone use keeps a cluster up until Ctrl-C or SIGTERM and prints its URL first::

    python -m tests.support.postgres            # creates and prints database "carebridge"
    python -m tests.support.postgres --port 55432 --dbname bench
    python -m tests.support.postgres --fast      # fsync off: for a quick functional check only
"""

from __future__ import annotations

import argparse
import atexit
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

# Server settings of every cluster: loopback only, room for the pools of parallel tests.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "max_connections": "200",
    "shared_buffers": "256MB",
}
# Durable commits: benchmarks must measure the real fsync cost.
DURABLE_SETTINGS = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
# The functional suite: nothing of a throwaway cluster has to survive a server or machine crash.
FAST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
SUPERUSER = "postgres"
# --no-sync only skips flushing initdb's own files: nothing of a throwaway cluster must survive a crash.
INITDB_OPTIONS = ("-A", "trust", "-U", SUPERUSER, "--encoding=UTF8", "--no-locale", "--no-sync")
START_ATTEMPTS = 4  # a new port per attempt: another process may grab the port we picked
_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL binaries are missing or the cluster would not start."""


def find_binaries() -> tuple[Path, Path]:
    """Return (initdb, pg_ctl): from PATH, else /usr/lib/postgresql/15/bin, else the newest other."""
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(initdb), Path(pg_ctl)
    others = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_major_version, reverse=True)
    for bindir in [Path("/usr/lib/postgresql/15/bin"), *others]:
        if (bindir / "initdb").is_file() and (bindir / "pg_ctl").is_file():
            return bindir / "initdb", bindir / "pg_ctl"
    raise PostgresUnavailable(
        "initdb/pg_ctl not found on PATH or in /usr/lib/postgresql/*/bin; "
        "run `make postgres-binaries` (installs the Debian `postgresql` package)"
    )


def _major_version(bindir: Path) -> int:
    name = bindir.parent.name
    return int(name) if name.isdigit() else 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> pwd.struct_passwd | None:
    """The account to run the server as: None means "as ourselves" (we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root but neither a `postgres` nor a `nobody` user exists")


class PostgresCluster:
    """A running throwaway cluster. Use ``start()``; ``stop()`` is idempotent."""

    def __init__(
        self, base_dir: Path, port: int, pg_ctl: Path, user: pwd.struct_passwd | None, *, durable: bool = True
    ) -> None:
        self.base_dir = base_dir
        self.durable = durable
        self.data_dir = base_dir / "data"
        self.socket_dir = base_dir / "sock"
        self.log_file = base_dir / "server.log"
        self.port = port
        self._pg_ctl = pg_ctl
        self._user = user
        self._running = False

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def start(cls, port: int | None = None, *, durable: bool = True) -> PostgresCluster:
        """Start a new cluster; ``durable=False`` turns fsync, synchronous_commit, full_page_writes off."""
        initdb, pg_ctl = find_binaries()
        user = _server_user()
        base_dir = Path(tempfile.mkdtemp(prefix="carebridge-pg-"))
        cluster = cls(base_dir, port or 0, pg_ctl, user, durable=durable)
        try:
            cluster.socket_dir.mkdir()
            if user is not None:
                for path in (base_dir, cluster.socket_dir):
                    os.chown(path, user.pw_uid, user.pw_gid)
            cluster._run(initdb, "-D", cluster.data_dir, *INITDB_OPTIONS, timeout=180)
            cluster._start_server(fixed_port=port)
        except BaseException:
            cluster._remove_dir()
            raise
        atexit.register(cluster.stop)
        return cluster

    def _start_server(self, fixed_port: int | None) -> None:
        attempts = 1 if fixed_port else START_ATTEMPTS
        for _ in range(attempts):
            self.port = fixed_port or _free_port()
            options = [f"-p {self.port}", f"-k {shlex.quote(str(self.socket_dir))}"]
            settings = {**SERVER_SETTINGS, **(DURABLE_SETTINGS if self.durable else FAST_SETTINGS)}
            options += [f"-c {key}={value}" for key, value in settings.items()]
            result = self._ctl("-l", self.log_file, "-w", "-t", "120", "-o", " ".join(options), "start")
            if result.returncode == 0:
                self._running = True
                return
            # e.g. the port was taken meanwhile; make sure no half-started server lingers.
            self._ctl("-m", "immediate", "stop")
        raise PostgresUnavailable(
            f"pg_ctl start failed {attempts}x (last port {self.port}): {result.stdout}{result.stderr}\n"
            f"--- {self.log_file} ---\n{self._log_tail()}"
        )

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._ctl("-m", "fast", "-w", "-t", "60", "stop")
        self._remove_dir()
        atexit.unregister(self.stop)

    def __enter__(self) -> PostgresCluster:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- databases -------------------------------------------------------------------------

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver) of ``dbname`` on this cluster."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def dsn(self, dbname: str = "postgres") -> str:
        """libpq connection string, for plain ``psycopg.connect``."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname}"

    def create_database(self, name: str, *, template: str | None = None) -> str:
        """Create a database -- empty, or a copy of ``template`` -- and return its SQLAlchemy URL.

        Nobody may be connected to the template while it is copied (PostgreSQL refuses);
        :meth:`make_template` makes sure nobody can.
        """
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(_check_name(name)))
        if template is not None:
            statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(_check_name(template)))
        self._admin(statement)
        return self.url(name)

    def make_template(self, name: str) -> None:
        """Mark a prepared database as a template that accepts no connections from now on."""
        ident = sql.Identifier(_check_name(name))
        self._admin(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(ident))

    def drop_database(self, name: str) -> None:
        """Drop a database, disconnecting whoever is still connected to it."""
        self._admin(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(_check_name(name)))
        )

    def _admin(self, statement: sql.Composed) -> None:
        with psycopg.connect(self.dsn(), autocommit=True, connect_timeout=30) as conn:
            conn.execute(statement)

    # -- helpers ---------------------------------------------------------------------------

    def _ctl(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        """Run ``pg_ctl -D <data> ARGS``; the caller inspects the return code."""
        return self._run(self._pg_ctl, "-D", self.data_dir, *args, check=False, timeout=180)

    def _run(
        self, *args: str | Path, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
        kwargs: dict[str, Any] = {}
        if self._user is not None:
            kwargs = {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}
            env["HOME"] = str(self.base_dir)
        result = subprocess.run(
            [str(arg) for arg in args],
            cwd=self.base_dir,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )
        if check and result.returncode != 0:
            raise PostgresUnavailable(
                f"{Path(args[0]).name} failed ({result.returncode}): {result.stdout}{result.stderr}"
            )
        return result

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def _remove_dir(self) -> None:
        shutil.rmtree(self.base_dir, ignore_errors=True)


def _check_name(name: str) -> str:
    if not _DB_NAME.fullmatch(name):
        raise ValueError(f"invalid database name {name!r}")
    return name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a throwaway PostgreSQL cluster until Ctrl-C/SIGTERM.")
    parser.add_argument("--port", type=int, default=None, help="fixed port (default: a free one)")
    parser.add_argument("--dbname", default="carebridge", help="database to create and print")
    parser.add_argument(
        "--fast", action="store_true", help="fsync, synchronous_commit, full_page_writes off (not durable)"
    )
    args = parser.parse_args(argv)

    # SIGTERM -> SystemExit, so the `with` block below stops the server and removes its files.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    with PostgresCluster.start(port=args.port, durable=not args.fast) as cluster:
        url = cluster.url(args.dbname) if args.dbname == "postgres" else cluster.create_database(args.dbname)
        print(url, flush=True)
        print(f"data: {cluster.data_dir}  (Ctrl-C or SIGTERM stops and removes it)", file=sys.stderr)
        try:
            while True:
                signal.pause()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
