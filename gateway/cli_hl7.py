"""``carebridge hl7 send`` and ``carebridge hl7 replay`` (contract: DESIGN.md §2).

``send FILE...`` prints one line per message, ``<file> <MSA-1> <MSA-2> [<ERR text>]``
(``-`` stands for an empty MSA-2), and exits 0 when every message got an
answer.  Files may use LF or CRLF line ends (converted to the CR that
HL7 v2.5 ch. 2.5.1 requires) and may hold several messages.

``replay (--failed | --id N ...)`` re-runs journaled messages through the
current mappers (after a mapping fix, or to finish a message the process
died on) and prints ``<journal id> <status> <ack code> [<error>]``; it exits 0
when every replayed message is now processed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.settings import Settings, settings_from

NO_ANSWER = "-"


def register(commands: Any, add_database_url: Callable[[argparse.ArgumentParser], None]) -> None:
    hl7 = commands.add_parser("hl7", help="send or replay HL7 v2 messages")
    sub = hl7.add_subparsers(dest="hl7_command", required=True)

    send = sub.add_parser("send", help="send HL7 v2 files over MLLP and print the ACKs")
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=None, help="default: CAREBRIDGE_MLLP_PORT or 2575")
    send.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for each ACK")
    send.add_argument("--tls-ca", default=None, help="CA file to verify the server (enables TLS)")
    send.add_argument("--tls-cert", default=None, help="client certificate (mutual TLS)")
    send.add_argument("--tls-key", default=None)
    send.add_argument("files", nargs="+", metavar="FILE")
    add_database_url(send)
    send.set_defaults(handler=_send)

    replay = sub.add_parser("replay", help="re-run journaled messages through the current mappers")
    which = replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--failed", action="store_true", help="all failed/rejected (and stale received)")
    which.add_argument("--id", type=int, nargs="+", action="extend", dest="ids", metavar="N")
    replay.add_argument(
        "--stale-after",
        type=float,
        default=60.0,
        help="with --failed: also replay 'received' rows older than this many seconds",
    )
    add_database_url(replay)
    replay.set_defaults(handler=_replay)


def split_messages(data: bytes) -> list[bytes]:
    """Normalise segment ends to CR and split a file into messages at each MSH segment."""
    text = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    messages: list[list[bytes]] = []
    for line in text.split(b"\r"):
        if not line.strip():
            continue
        bare = line[3:] if line.startswith(b"\xef\xbb\xbf") else line
        if bare.startswith(b"MSH") or not messages:
            messages.append([])
        messages[-1].append(line)
    return [b"\r".join(segments) + b"\r" for segments in messages]


def _settings(args: argparse.Namespace) -> Settings:
    return settings_from(args)


def _send(args: argparse.Namespace) -> int:
    from gateway.mllp.client import MllpClient
    from gateway.mllp.tls import client_context

    port = args.port if args.port is not None else _settings(args).mllp.port
    context = None
    if args.tls_ca or args.tls_cert:
        context = client_context(args.tls_ca, args.tls_cert, args.tls_key)
    client: MllpClient | None = None
    all_answered = True
    try:
        for name in args.files:
            try:
                messages = split_messages(Path(name).read_bytes())
            except OSError as exc:
                print(f"{name} {NO_ANSWER} {NO_ANSWER} cannot read file: {exc.strerror}")
                all_answered = False
                continue
            for message in messages:
                ack = None
                problem = "no answer"
                try:
                    if client is None:
                        client = MllpClient(args.host, port, timeout=args.timeout, ssl_context=context)
                    ack = client.exchange(message)
                except OSError as exc:
                    problem = f"no answer: {type(exc).__name__}: {exc}"
                if ack is None:
                    all_answered = False
                    print(f"{name} {NO_ANSWER} {NO_ANSWER} {problem}")
                    if client is not None:
                        client.close()
                        client = None
                    continue
                line = f"{name} {ack.code or NO_ANSWER} {ack.control_id or NO_ANSWER}"
                print(f"{line} {ack.text}" if ack.text else line, flush=True)
    finally:
        if client is not None:
            client.close()
    return 0 if all_answered else 1


def _replay(args: argparse.Namespace) -> int:
    from fhir_store import JOURNAL_PROCESSED, journal_list_to_replay, now_us
    from gateway.ingest import Ingestor
    from gateway.runtime import Runtime

    settings = _settings(args)
    runtime = Runtime.create(settings)
    try:
        ingestor = Ingestor(runtime.store, settings)
        if args.failed:
            stale = now_us() - int(args.stale_after * 1_000_000)
            ids = journal_list_to_replay(runtime.engine, stale_before_us=stale)
        else:
            ids = list(args.ids)
        ok = True
        for journal_id in ids:
            try:
                outcome = ingestor.replay(journal_id)
            except KeyError:
                print(f"{journal_id} unknown {NO_ANSWER} no such journal entry")
                ok = False
                continue
            ok = ok and outcome.status == JOURNAL_PROCESSED
            line = f"{journal_id} {outcome.status} {outcome.ack_code}"
            print(f"{line} {outcome.error}" if outcome.error else line, flush=True)
        return 0 if ok else 1
    finally:
        runtime.close()
