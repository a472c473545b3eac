"""``carebridge clients add|list``: register OAuth clients (the secret is printed once)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from common import CarebridgeError
from fhir_store import make_engine, upgrade
from gateway.auth.clients import ClientRegistry
from gateway.auth.scopes import ROLES
from gateway.settings import settings_from


def _registry(args: argparse.Namespace) -> tuple[ClientRegistry, Any]:
    settings = settings_from(args)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url, pool_size=1)
    return ClientRegistry(engine, secret_log2n=settings.auth.secret_log2n), engine


def _add(args: argparse.Namespace) -> int:
    registry, engine = _registry(args)
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
    except CarebridgeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    client = registry.get(args.id)
    print(f"client_id: {args.id}")
    print(f"role: {args.role}")
    print(f"scopes: {client.scopes if client else ''}")
    if secret:
        print(f"client_secret: {secret}")
        print("(store the secret now: it is not shown again)")
    return 0


def _list(args: argparse.Namespace) -> int:
    registry, engine = _registry(args)
    try:
        for client in registry.list():
            state = "active" if client.active else "disabled"
            print(f"{client.client_id}\t{client.role}\t{state}\t{client.scopes}")
    finally:
        engine.dispose()
    return 0


def register(commands: Any, add_database_url: Callable[[argparse.ArgumentParser], None]) -> None:
    clients = commands.add_parser("clients", help="register and list OAuth clients")
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
