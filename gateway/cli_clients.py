"""``carebridge clients add|list|show|disable|enable|rotate-secret|set-role|remove``, ``keys rotate-signing``.

Why (issue #16 item 3; ISO/IEC 27001:2022 A.5.18 access rights, A.8.24 key
management): an operator must be able to cut off a client, re-key it, demote it
or rotate the token signing key without a restart.  Each change bumps the auth
revision in the database, so every running process (HTTP workers included)
refuses the affected tokens within ``CAREBRIDGE_AUTH_REFRESH_S`` seconds
(``gateway.auth.state``).  Every change appends one AuditEvent (Security Alert,
subtype ``clients-<command>`` / ``keys-rotate-signing``).  Secrets are printed
once and never stored in clear.  Exit codes: 0 done, 2 refused (message on stderr).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from common import CarebridgeError
from fhir_store import make_engine, open_cipher, upgrade
from gateway.auth.clients import ClientRegistry
from gateway.auth.scopes import ROLES
from gateway.auth.tokens import token_service
from gateway.cli_audit import record_key_command
from gateway.registration import register_all
from gateway.settings import Settings, settings_from


def _registry(args: argparse.Namespace) -> tuple[ClientRegistry, Any, Settings]:
    settings = settings_from(args)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url, pool_size=1)
    return ClientRegistry(engine, secret_log2n=settings.auth.secret_log2n), engine, settings


def _print_secret(client_id: str, secret: str) -> None:
    print(f"client_id: {client_id}")
    print(f"client_secret: {secret}")
    print("(store the secret now: it is not shown again)")


def _add(args: argparse.Namespace) -> int:
    registry, engine, _ = _registry(args)
    jwks = None
    if args.jwks_file:
        with open(args.jwks_file, encoding="utf-8") as handle:
            jwks = handle.read()
    try:
        secret = registry.add(
            args.id,
            args.role,
            args.scopes,
            jwks=jwks,
            patient_id=args.patient_id,
            with_secret=not args.no_secret,
        )
        client = registry.get(args.id)
    except CarebridgeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(f"client_id: {args.id}")
    print(f"role: {args.role}")
    print(f"scopes: {client.scopes if client else ''}")
    if secret:
        print(f"client_secret: {secret}")
        print("(store the secret now: it is not shown again)")
    return 0


def _list(args: argparse.Namespace) -> int:
    registry, engine, _ = _registry(args)
    try:
        for client in registry.list():
            state = "active" if client.active else "disabled"
            print(f"{client.client_id}\t{client.role}\t{state}\t{client.scopes}")
    finally:
        engine.dispose()
    return 0


def _show(args: argparse.Namespace) -> int:
    registry, engine, _ = _registry(args)
    try:
        client = registry.get(args.id)
    finally:
        engine.dispose()
    if client is None:
        print(f"error: no client '{args.id}'", file=sys.stderr)
        return 2
    print(f"client_id: {client.client_id}")
    print(f"role: {client.role}")
    print(f"state: {'active' if client.active else 'disabled'}")
    print(f"scopes: {client.scopes}")
    print(f"patient_id: {client.patient_id or ''}")
    print(f"authentication: {', '.join(_methods(client.secret_hash, client.jwks)) or 'none'}")
    print(f"credential_generation: {client.generation}")
    return 0


def _methods(secret_hash: str | None, jwks: str | None) -> list[str]:
    return [name for name, present in (("client_secret", secret_hash), ("private_key_jwt", jwks)) if present]


def _change(command: str, work: Callable[[ClientRegistry, argparse.Namespace], str | None]) -> Any:
    """A lifecycle command: run ``work``, print its outcome, audit it (refusals too)."""

    def handler(args: argparse.Namespace) -> int:
        registry, engine, settings = _registry(args)
        subtype = f"clients-{command}"
        try:
            secret = work(registry, args)
        except CarebridgeError as exc:
            print(f"error: {exc.message}", file=sys.stderr)
            record_key_command(settings, subtype, f"client {args.id}: refused", ok=False)
            return 2
        finally:
            engine.dispose()
        line = f"client {args.id}: {command} done; running processes apply it within {settings.auth.refresh_s:g} s"
        record_key_command(settings, subtype, line, ok=True)
        if secret:
            _print_secret(args.id, secret)
        print(line)
        return 0

    return handler


def _disable(registry: ClientRegistry, args: argparse.Namespace) -> None:
    registry.set_active(args.id, False)


def _enable(registry: ClientRegistry, args: argparse.Namespace) -> None:
    registry.set_active(args.id, True)


def _set_role(registry: ClientRegistry, args: argparse.Namespace) -> None:
    registry.set_role(args.id, args.role, args.scopes)


def _remove(registry: ClientRegistry, args: argparse.Namespace) -> None:
    registry.remove(args.id)


def _rotate_secret(registry: ClientRegistry, args: argparse.Namespace) -> str:
    return registry.rotate_secret(args.id)


def _rotate_signing(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        register_all()
        kid = token_service(engine, open_cipher(engine, settings.store.key_source), settings).rotate()
    finally:
        engine.dispose()
    line = (
        f"signing key {kid} now signs access tokens; retired keys stay in the JWKS until their tokens "
        f"expire; running processes switch within {settings.auth.refresh_s:g} s"
    )
    record_key_command(settings, "keys-rotate-signing", line, ok=True)
    print(line)
    return 0


def register(commands: Any, add_database_url: Callable[[argparse.ArgumentParser], None]) -> None:
    clients = commands.add_parser("clients", help="register, inspect and revoke OAuth clients")
    sub = clients.add_subparsers(dest="clients_command", required=True)
    add = sub.add_parser("add", help="register a client and print its secret once")
    add.add_argument("--id", required=True)
    add.add_argument("--role", required=True, choices=ROLES)
    add.add_argument(
        "--scopes", default=None, help="space-separated SMART scopes (default: the role's ceiling)"
    )
    add.add_argument("--patient-id", default=None, help="for role patient: the Patient id it may see")
    add.add_argument("--jwks-file", default=None, help="public JWKS for private_key_jwt authentication")
    add.add_argument("--no-secret", action="store_true", help="private_key_jwt only: issue no secret")
    add_database_url(add)
    add.set_defaults(handler=_add)
    listing = sub.add_parser("list", help="list registered clients")
    add_database_url(listing)
    listing.set_defaults(handler=_list)

    def by_id(
        name: str, help_text: str, handler: Callable[[argparse.Namespace], int]
    ) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        parser.add_argument("--id", required=True)
        add_database_url(parser)
        parser.set_defaults(handler=handler)
        return parser

    by_id("show", "one client: role, state, scopes, authentication methods", _show)
    by_id("disable", "refuse the client's tokens and logins (until enable)", _change("disable", _disable))
    by_id("enable", "accept a disabled client again", _change("enable", _enable))
    by_id(
        "rotate-secret",
        "new secret (printed once); older tokens refused",
        _change("rotate-secret", _rotate_secret),
    )
    by_id("remove", "delete the client; its tokens are refused", _change("remove", _remove))
    role = by_id(
        "set-role",
        "change the role (scopes narrowed to it); older tokens refused",
        _change("set-role", _set_role),
    )
    role.add_argument("--role", required=True, choices=ROLES)
    role.add_argument("--scopes", default=None, help="space-separated SMART scopes (default: kept, narrowed)")

    keys = commands.add_parser("keys", help="access-token signing keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    rotate = keys_sub.add_parser("rotate-signing", help="sign with a new key from now on, in every process")
    add_database_url(rotate)
    rotate.set_defaults(handler=_rotate_signing)
