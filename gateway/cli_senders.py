"""``carebridge senders add|list|enable|disable|remove|set-charset``: the HIS senders allowed on MLLP (contract: DESIGN.md §2).

A sender is MSH-3 (``--application``) and MSH-4 (``--facility``) tied to where
it may connect from: ``--network CIDR`` (repeatable) and/or
``--certificate-cn CN`` (the subject CN of its TLS client certificate, with
``CAREBRIDGE_MLLP_TLS_CLIENT_CA`` set).  At least one is required.  Changes
``--charset`` (on ``add``, or ``set-charset``; empty clears it) is the sender's
default character set for messages without MSH-18, used before
``CAREBRIDGE_HL7_SENDER_CHARSETS``.  Changes
reach every running server within ``gateway.sender_registry.REFRESH_S`` seconds.
Every change, refused ones too, is one AuditEvent (Security Alert, subtype
``senders-<command>``; ISO/IEC 27001:2022 A.8.15): who may write patient
records is security configuration.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from common import CarebridgeError
from fhir_store import make_engine, upgrade
from gateway.cli_audit import record_key_command
from gateway.hl7_senders import RegisteredSender
from gateway.sender_registry import SenderRegistry
from gateway.settings import Settings, settings_from


def _registry(args: argparse.Namespace) -> tuple[SenderRegistry, Any, Settings]:
    settings = settings_from(args)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url, pool_size=1)
    return SenderRegistry(engine), engine, settings


def _audit(settings: Settings, command: str, args: argparse.Namespace, outcome: str, *, ok: bool) -> None:
    """The command's AuditEvent: sender ids and the outcome only (no networks of other senders)."""
    record_key_command(
        settings, f"senders-{command}", f"sender {args.application}^{args.facility}: {outcome}", ok=ok
    )


def _line(sender: RegisteredSender) -> str:
    state = "enabled" if sender.enabled else "disabled"
    networks = ",".join(str(n) for n in sender.networks) or "-"
    line = f"{sender.application}\t{sender.facility}\t{state}\tnetworks={networks}\tcn={sender.certificate_cn or '-'}"
    return f"{line}\tcharset={sender.charset}" if sender.charset else line


def _add(args: argparse.Namespace) -> int:
    registry, engine, settings = _registry(args)
    try:
        sender = registry.add(
            args.application,
            args.facility,
            networks=args.networks or (),
            certificate_cn=args.certificate_cn,
            charset=args.charset,
        )
    except CarebridgeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        _audit(settings, "add", args, "refused", ok=False)
        return 2
    finally:
        engine.dispose()
    _audit(settings, "add", args, "added", ok=True)
    print(_line(sender))
    return 0


def _list(args: argparse.Namespace) -> int:
    registry, engine, settings = _registry(args)
    try:
        for sender in registry.list():
            print(_line(sender))
    finally:
        engine.dispose()
    if settings.mllp.open:
        print("note: CAREBRIDGE_MLLP_OPEN=true: the server accepts any sender", file=sys.stderr)
    return 0


def _change(action: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        registry, engine, settings = _registry(args)
        try:
            if action == "remove":
                found = registry.remove(args.application, args.facility)
            else:
                found = registry.set_enabled(args.application, args.facility, action == "enable")
        finally:
            engine.dispose()
        if not found:
            _audit(settings, action, args, "refused: not registered", ok=False)
            print(f"error: sender {args.application}^{args.facility} is not registered", file=sys.stderr)
            return 1
        _audit(settings, action, args, f"{action}d", ok=True)
        print(f"{args.application}\t{args.facility}\t{action}d")
        return 0

    return run


def _set_charset(args: argparse.Namespace) -> int:
    registry, engine, settings = _registry(args)
    try:
        found = registry.set_charset(args.application, args.facility, args.charset)
    except CarebridgeError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        _audit(settings, "set-charset", args, "refused", ok=False)
        return 2
    finally:
        engine.dispose()
    if not found:
        _audit(settings, "set-charset", args, "refused: not registered", ok=False)
        print(f"error: sender {args.application}^{args.facility} is not registered", file=sys.stderr)
        return 1
    _audit(settings, "set-charset", args, f"charset {args.charset or '-'}", ok=True)
    print(f"{args.application}\t{args.facility}\tcharset={args.charset or '-'}")
    return 0


def _sender_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--application", required=True, help="MSH-3 (sending application)")
    parser.add_argument("--facility", required=True, help="MSH-4 (sending facility)")


def register(commands: Any, add_database_url: Callable[[argparse.ArgumentParser], None]) -> None:
    senders = commands.add_parser("senders", help="register the HIS senders allowed on MLLP")
    sub = senders.add_subparsers(dest="senders_command", required=True)
    add = sub.add_parser("add", help="register a sender (needs --network or --certificate-cn)")
    _sender_args(add)
    add.add_argument(
        "--network",
        dest="networks",
        action="extend",
        nargs="+",
        metavar="CIDR",
        help="source network(s) it connects from, e.g. 10.20.0.0/16 or one address",
    )
    add.add_argument("--certificate-cn", default=None, help="subject CN of its TLS client certificate")
    add.add_argument("--charset", default=None, help="default charset without MSH-18, e.g. latin-1, cp1258")
    add_database_url(add)
    add.set_defaults(handler=_add)
    listing = sub.add_parser("list", help="list registered senders")
    add_database_url(listing)
    listing.set_defaults(handler=_list)
    for action, text in (
        ("disable", "refuse a sender's messages from now on (within seconds, no restart)"),
        ("enable", "accept a disabled sender again"),
        ("remove", "forget a sender (its journaled messages stay)"),
    ):
        parser = sub.add_parser(action, help=text)
        _sender_args(parser)
        add_database_url(parser)
        parser.set_defaults(handler=_change(action))
    charset = sub.add_parser("set-charset", help="set the default charset of messages without MSH-18")
    _sender_args(charset)
    charset.add_argument("--charset", required=True, help="e.g. latin-1, cp1258; empty to clear")
    add_database_url(charset)
    charset.set_defaults(handler=_set_charset)
