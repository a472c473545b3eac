"""``carebridge users add|list|disable|enable|reset-password|enrol-totp``: people of the console (DESIGN.md §2).

A password given on standard input (``--password-stdin``, for scripts) is the
account's own; without it a one-time password is printed once and must be
changed at first sign-in.  ``enrol-totp`` prints the ``otpauth://`` URI of a new
second factor once (a QR code of it goes into the person's authenticator app).
Every command that changes an account, refused ones too, is one AuditEvent
(Security Alert, subtype ``users-<command>``; ISO/IEC 27001:2022 A.5.16, A.8.15):
who may sign in is security configuration.  The event names the username and
role, never a password or secret.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from common import CarebridgeError
from fhir_store import make_engine, open_cipher, upgrade
from gateway.auth.users import PEOPLE_ROLES, User, UserDirectory
from gateway.cli_audit import record_key_command
from gateway.settings import Settings, settings_from


def _directory(args: argparse.Namespace) -> tuple[UserDirectory, Any, Settings]:
    settings = settings_from(args)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url, pool_size=1)
    cipher = open_cipher(engine, settings.store.key_source)
    return UserDirectory(engine, cipher, settings.console), engine, settings


def _audit(settings: Settings, command: str, username: str, outcome: str, *, ok: bool) -> None:
    record_key_command(settings, f"users-{command}", f"user {username}: {outcome}", ok=ok)


def _line(user: User) -> str:
    state = "active" if user.active else "disabled"
    flags = [state, "totp" if user.totp_enabled else "no-totp"]
    if user.must_change_password:
        flags.append("must-change-password")
    return f"{user.username}\t{user.role}\t{','.join(flags)}\t{user.display_name}"


def _password(args: argparse.Namespace) -> str | None:
    if not getattr(args, "password_stdin", False):
        return None
    return sys.stdin.readline().rstrip("\r\n")


def _add(args: argparse.Namespace) -> int:
    directory, engine, settings = _directory(args)
    try:
        user, one_time = directory.add(
            args.username, args.role, args.display_name, email=args.email, password=_password(args)
        )
    except CarebridgeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        _audit(settings, "add", args.username, f"refused ({exc.location or 'input'})", ok=False)
        return 2
    finally:
        engine.dispose()
    _audit(settings, "add", args.username, f"added with role {user.role}", ok=True)
    print(_line(user))
    if one_time is not None:
        print(f"one-time password: {one_time}")
        print("(shown once; it must be changed at the first sign-in)", file=sys.stderr)
    return 0


def _list(args: argparse.Namespace) -> int:
    directory, engine, _settings = _directory(args)
    try:
        for user in directory.list():
            print(_line(user))
    finally:
        engine.dispose()
    return 0


def _change(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        directory, engine, settings = _directory(args)
        printed: str | None = None
        try:
            if action in ("disable", "enable"):
                directory.set_active(args.username, action == "enable")
                done = f"{action}d"
            elif action == "reset-password":
                printed = directory.reset_password(args.username, _password(args))
                done = "password reset"
            else:
                printed = directory.enrol_totp(args.username)
                done = "second factor enrolled"
        except CarebridgeError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            _audit(settings, action, args.username, f"refused ({exc.location or 'input'})", ok=False)
            return 1
        finally:
            engine.dispose()
        _audit(settings, action, args.username, done, ok=True)
        print(f"{args.username}\t{done}")
        if printed is not None:
            label = "one-time password" if action == "reset-password" else "otpauth URI"
            print(f"{label}: {printed}")
        return 0

    return run


def register(commands: Any, add_database_url: Callable[[argparse.ArgumentParser], None]) -> None:
    users = commands.add_parser("users", help="people who sign in to the console")
    sub = users.add_subparsers(dest="users_command", required=True)
    add = sub.add_parser("add", help="create an account (prints a one-time password unless --password-stdin)")
    add.add_argument("--username", required=True)
    add.add_argument("--role", required=True, choices=PEOPLE_ROLES)
    add.add_argument("--display-name", required=True, help='shown in the audit trail, e.g. "Trần Thị Bình"')
    add.add_argument("--email", default=None)
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add_database_url(add)
    add.set_defaults(handler=_add)
    listing = sub.add_parser("list", help="list accounts")
    add_database_url(listing)
    listing.set_defaults(handler=_list)
    for action, text in (
        ("disable", "stop an account from signing in (its sessions end within seconds)"),
        ("enable", "allow a disabled or locked account again"),
        ("reset-password", "set a new password (one-time unless --password-stdin) and unlock"),
        ("enrol-totp", "give the account a new TOTP second factor; prints its otpauth URI once"),
    ):
        parser = sub.add_parser(action, help=text)
        parser.add_argument("--username", required=True)
        if action == "reset-password":
            parser.add_argument("--password-stdin", action="store_true")
        add_database_url(parser)
        parser.set_defaults(handler=_change(action))
