"""The ``carebridge`` command line (contract: DESIGN.md §2).

Sub-commands: ``serve``, ``hl7 send|replay``, ``clients add|list``, ``senders add|list|enable|disable|remove``,
``audit verify|export``, ``users add|list|disable|enable|reset-password|enrol-totp``, ``store status|rotate-key|rewrap|reindex``,
``crm status|rotate-pseudonym-key|rotate-field-key|rewrap-fields``, and more.  Every command accepts ``--database-url``
(default: ``CAREBRIDGE_DATABASE_URL``, else ``sqlite:///var/carebridge.db``).
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from gateway import cli_audit, cli_clients, cli_crm, cli_hl7, cli_ops, cli_senders, cli_store, cli_users
from gateway.registration import register_all
from gateway.settings import settings_from


def _add_database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default=None, help="SQLAlchemy URL (env CAREBRIDGE_DATABASE_URL)")


def _serve(args: argparse.Namespace) -> int:
    from gateway.production import check
    from gateway.runtime import run

    settings = settings_from(args, host=args.host, http_port=args.http_port, mllp_port=args.mllp_port)
    problems = check(settings)  # CAREBRIDGE_ENV=production: refuse before anything starts
    for problem in problems:
        print(f"carebridge serve: production mode refuses: {problem}", file=sys.stderr)
    if problems:
        return 2
    run(settings)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="carebridge", description="FHIR-native HIS/CRM integration middleware"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the FHIR API, the MLLP listener and the workers")
    serve.add_argument("--host", default=None)
    serve.add_argument("--http-port", type=int, default=None)
    serve.add_argument("--mllp-port", type=int, default=None)
    _add_database_url(serve)
    serve.set_defaults(handler=_serve)

    cli_hl7.register(commands, _add_database_url)
    cli_audit.register(commands, _add_database_url)
    cli_clients.register(commands, _add_database_url)
    cli_crm.register(commands, _add_database_url)
    cli_ops.register(commands, _add_database_url)
    cli_store.register(commands, _add_database_url)
    cli_senders.register(commands, _add_database_url)
    cli_users.register(commands, _add_database_url)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    register_all()  # every command sees every package's resource types, tables and sealed columns
    result: int = args.handler(args)
    return result


def run() -> NoReturn:
    """The ``carebridge`` console script: :func:`main`, then exit without the interpreter's teardown.

    After a command is done, CPython's finalisation deallocates every object of every imported
    module; with FastAPI, pydantic and the FHIR model classes loaded that is a noticeable pause
    (docs/benchmarks.md, "Design figures"), paid by every CLI call and by every stop of ``serve``.  The
    ``atexit`` handlers (logging flush, thread pools, temporary directories) still run and both
    streams are flushed before the process ends with the command's exit status.  An exception
    that escapes ``main`` takes Python's usual path (traceback, status 1).
    """
    try:
        code = main()
    except SystemExit as exit_:  # argparse: --help, usage errors
        if exit_.code is not None and not isinstance(exit_.code, int):
            print(exit_.code, file=sys.stderr)
            code = 1
        else:
            code = exit_.code or 0
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
