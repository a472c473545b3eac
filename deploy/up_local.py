"""``make up-local``: the docker-compose topology without Docker (PostgreSQL 15 + ``carebridge serve``).

Why: not every clinic or developer machine can run Docker, yet everyone should
be able to run carebridge against PostgreSQL, the production backend, not
only against the embedded SQLite default.  This script

1. creates a persistent PostgreSQL cluster in ``var/pg`` on first use
   (``initdb`` with SCRAM password authentication, a random superuser password
   kept in ``var/pg/superuser.password``, mode 0600), listening on 127.0.0.1 only;
2. starts it (or reuses it when it already runs), creates database ``carebridge``;
3. creates the service role ``carebridge_svc`` (a member of ``carebridge_app``:
   INSERT and SELECT only on the audit tables; password in
   ``var/pg/service.password``, 0600) and runs the migrations as the owner --
   as docker-compose.yml does (issue #18: the service cannot disable the audit
   triggers or delete audit rows);
4. writes the owner's URL to ``var/pg/database.url`` and the service's to
   ``var/pg/service.url`` (both 0600) so other commands can use them:
   ``carebridge backup --database-url "$(cat var/pg/database.url)" ...``;
5. runs ``carebridge serve`` against it in the foreground, as ``carebridge_svc``.

Ctrl-C (or SIGTERM) stops carebridge, then the PostgreSQL server it started.
As root, the cluster's files belong to the ``postgres`` account (``nobody`` if
missing) and the server runs as that account: PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.postgres import find_binaries  # noqa: E402  (same binary search as the tests)

SUPERUSER = "postgres"


def server_account() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    sys.exit("up-local: running as root but there is no `postgres` or `nobody` account to run PostgreSQL")


def run_as(
    account: pwd.struct_passwd | None, args: list[str], **kwargs: Any
) -> subprocess.CompletedProcess[str]:
    extra: dict[str, Any] = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    if account is not None:
        extra = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        env["HOME"] = "/tmp"
    return subprocess.run(args, env=env, capture_output=True, text=True, check=False, **extra, **kwargs)


def own(path: Path, account: pwd.struct_passwd | None) -> None:
    if account is not None:
        os.chown(path, account.pw_uid, account.pw_gid)


def init_cluster(base: Path, account: pwd.struct_passwd | None) -> None:
    initdb, _ = find_binaries()
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755 if account is not None else 0o700)
    own(base, account)
    password_file = base / "superuser.password"
    fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(24) + "\n")
    own(password_file, account)
    print(f"up-local: creating a PostgreSQL cluster in {base / 'data'} (first run)", flush=True)
    result = run_as(
        account,
        [str(initdb), "-D", str(base / "data"), "-U", SUPERUSER, "--auth=scram-sha-256",
         f"--pwfile={password_file}", "--encoding=UTF8", "--no-locale"],
        timeout=300,
    )  # fmt: skip
    if result.returncode != 0:
        sys.exit(f"up-local: initdb failed:\n{result.stdout}{result.stderr}")


def pg_ctl(account: pwd.struct_passwd | None, base: Path, *args: str) -> subprocess.CompletedProcess[str]:
    _, ctl = find_binaries()
    return run_as(account, [str(ctl), "-D", str(base / "data"), *args], timeout=180)


def start_server(base: Path, port: int, account: pwd.struct_passwd | None) -> bool:
    """Start the cluster; False if it was already running (then we leave it running on exit)."""
    if pg_ctl(account, base, "status").returncode == 0:
        print("up-local: PostgreSQL already running in this data directory; reusing it", flush=True)
        return False
    sock = base / "sock"
    sock.mkdir(exist_ok=True)
    own(sock, account)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {sock}"
    result = pg_ctl(account, base, "-l", str(base / "server.log"), "-w", "-t", "120", "-o", options, "start")
    if result.returncode != 0:
        log = (
            (base / "server.log").read_text(errors="replace")[-3000:]
            if (base / "server.log").exists()
            else ""
        )
        sys.exit(f"up-local: PostgreSQL did not start (port {port} in use?):\n{result.stderr}\n{log}")
    return True


def server_port(base: Path, default: int) -> int:
    """The port of a running cluster (line 4 of postmaster.pid), else ``default``."""
    try:
        return int((base / "data" / "postmaster.pid").read_text().splitlines()[3])
    except (OSError, IndexError, ValueError):
        return default


def ensure_database(password: str, port: int, dbname: str) -> None:
    import psycopg
    from psycopg import sql

    dsn = f"host=127.0.0.1 port={port} user={SUPERUSER} dbname=postgres"
    with psycopg.connect(dsn, password=password, autocommit=True, connect_timeout=30) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))


SERVICE_ROLE = "carebridge_svc"
APP_ROLE = "carebridge_app"  # migration 0002 grants this group its rights


def secret_file(path: Path) -> str:
    """A random password kept in ``path`` (0600), created on first use."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def ensure_service_role(password: str, port: int, dbname: str, service_password: str) -> None:
    """``carebridge_svc LOGIN IN ROLE carebridge_app`` (created or its password re-set)."""
    import psycopg
    from psycopg import sql

    dsn = f"host=127.0.0.1 port={port} user={SUPERUSER} dbname={dbname}"
    with psycopg.connect(dsn, password=password, autocommit=True, connect_timeout=30) as conn:
        if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (APP_ROLE,)).fetchone() is None:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(APP_ROLE)))
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (SERVICE_ROLE,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(SERVICE_ROLE), sql.Literal(service_password)
            )
        )
        conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(APP_ROLE), sql.Identifier(SERVICE_ROLE)))


def write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")


def migrate(owner_url: str) -> None:
    """Migrations as the owner, in a process of their own (the service never holds the owner's password)."""
    result = subprocess.run(
        [sys.executable, "-m", "gateway.migrations", "--database-url", owner_url, "upgrade", "head"],
        cwd=ROOT, capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    if result.returncode != 0:
        sys.exit(f"up-local: migrations failed:\n{result.stdout}{result.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", default=str(ROOT / "var" / "pg"), help="cluster home (default var/pg)")
    parser.add_argument("--pg-port", type=int, default=55432, help="PostgreSQL port on 127.0.0.1")
    parser.add_argument("--dbname", default="carebridge")
    parser.add_argument("--host", default=None, help="carebridge listen address (default 127.0.0.1)")
    parser.add_argument("--http-port", type=int, default=None)
    parser.add_argument("--mllp-port", type=int, default=None)
    args = parser.parse_args(argv)

    base = Path(args.data_dir).resolve()
    account = server_account()
    if not (base / "data" / "PG_VERSION").exists():
        init_cluster(base, account)
    password = (base / "superuser.password").read_text().strip()

    stopping = False

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)

    child: subprocess.Popen[bytes] | None = None
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    started = start_server(base, args.pg_port, account)
    port = server_port(base, args.pg_port)
    code = 1
    try:
        ensure_database(password, port, args.dbname)
        service_password = secret_file(base / "service.password")
        ensure_service_role(password, port, args.dbname, service_password)
        url = f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{port}/{args.dbname}"
        service_url = f"postgresql://{SERVICE_ROLE}:{service_password}@127.0.0.1:{port}/{args.dbname}"
        url_file = base / "database.url"
        write_secret(url_file, url)
        write_secret(base / "service.url", service_url)
        migrate(url)
        print(
            f"up-local: PostgreSQL on 127.0.0.1:{port} (database {args.dbname}; owner URL in {url_file})\n"
            f"up-local: starting carebridge serve as {SERVICE_ROLE}; Ctrl-C stops carebridge and PostgreSQL",
            flush=True,
        )
        serve = [sys.executable, "-m", "gateway.cli", "serve", "--database-url", service_url]
        for flag, value in (
            ("--host", args.host),
            ("--http-port", args.http_port),
            ("--mllp-port", args.mllp_port),
        ):
            if value is not None:
                serve += [flag, str(value)]
        if not stopping:
            # Own process group: a Ctrl-C reaches carebridge once, through on_signal, not twice.
            child = subprocess.Popen(serve, cwd=ROOT, start_new_session=True)
            if stopping:  # a signal arrived while the child was being spawned
                child.send_signal(signal.SIGTERM)
            while child.poll() is None:
                try:
                    child.wait(timeout=0.5)
                except subprocess.TimeoutExpired:
                    continue
            code = child.returncode
            if stopping and code in (0, -signal.SIGTERM):
                code = 0
    finally:
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
        if started:
            print("up-local: stopping PostgreSQL", flush=True)
            pg_ctl(account, base, "-m", "fast", "-w", "-t", "60", "stop")
    return code


if __name__ == "__main__":
    sys.exit(main())
