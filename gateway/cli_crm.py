"""``carebridge crm rotate-pseudonym-key|rotate-field-key|rewrap-fields|status|grant-backlog``.

Why (ISO/IEC 27001:2022 A.8.24 key management and rotation): pseudonym keys
rotate per CRM without breaking the CRM's links (the bridge delivers an old →
new mapping as a ``pseudonym.rotated`` event); field keys rotate, every sealed
row stays readable through its key id, and ``rewrap-fields`` then moves the
rows still under an old field key to the current one (``crm_bridge.field_keys``)
so the old key can be retired.

* ``rotate-field-key``: a new current field key in the key file; running
  processes follow within seconds (``consent.keys.FieldCipher``).
* ``rewrap-fields [--batch-size N] [--retire]``: re-encrypts outbox payloads,
  webhook secrets and queued SIU messages under the current field key, in
  short batches while carebridge runs; idempotent, and resumes when run again.
  ``--retire`` then removes old field keys no row uses from the key file.
* ``grant-backlog --crm ID [--from-cursor N] --reason TEXT``: a CRM's feed
  starts at its registration (``crm_bridge.feed_start``, Law 91/2025 Art. 9);
  reading older events is this explicit operator decision, audited with its reason.
* ``status``: outbox size, subscription cursors, rows per field key id and how
  many are still under old keys.

The rotations, ``rewrap-fields`` and ``grant-backlog`` each append one AuditEvent (DICOM 110113
Security Alert, subtype ``crm-<command>``), like ``carebridge store`` does.
No patient data is printed.  Exit codes: 0 done, 1 refused (message on stderr).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from sqlalchemy import Engine

from consent import ENV_KEYS, KeyMaterialError, KeyStore
from crm_bridge import (
    field_keys_in_use,
    grant_backlog,
    outbox_size,
    rewrap_fields,
    rotate_pseudonyms,
    rows_under_old_keys,
    subscription_cursors,
)
from fhir_store import for_writing, make_engine, upgrade
from gateway.cli_audit import run_key_command
from gateway.settings import settings_from

Work = Callable[[argparse.Namespace, Engine, KeyStore], str]


def _run(args: argparse.Namespace, command: str, work: Work, *, audited: bool = True) -> int:
    """Open the database and the CRM key file, run ``work``, print and audit its outcome line."""
    settings = settings_from(args)
    upgrade(settings.database_url)
    crm = settings.crm
    engine = make_engine(settings.database_url, pool_size=2)
    try:
        return run_key_command(
            settings,
            f"crm-{command}",
            lambda: work(args, engine, KeyStore.load_or_create(crm.key_source)),
            audited=audited,
        )
    finally:
        engine.dispose()


def _writable(keys: KeyStore) -> None:
    if keys.path is None:
        raise KeyMaterialError(
            f"the CRM keys come from {ENV_KEYS}: change the JSON there (docs/operations.md §3), restart"
        )


def _rotate_pseudonym(args: argparse.Namespace, engine: Engine, keys: KeyStore) -> str:
    _writable(keys)
    with for_writing(engine).begin() as conn:
        count = rotate_pseudonyms(conn, keys, args.crm)
    return f"rotated {args.crm} to {keys.ring_for(args.crm).current}; {count} pseudonym links re-keyed"


def _rotate_field(_args: argparse.Namespace, _engine: Engine, keys: KeyStore) -> str:
    _writable(keys)
    old, new = keys.rotate_field_key()
    return (
        f"field key {old} -> {new} (old key kept to read existing rows); "
        "run `carebridge crm rewrap-fields` once running processes use it (restart, or wait 10 s)"
    )


def _rewrap(args: argparse.Namespace, engine: Engine, keys: KeyStore) -> str:
    if args.retire:
        _writable(keys)
    report = rewrap_fields(engine, keys, batch=args.batch_size, retire=args.retire)
    moved = ", ".join(f"{column}={n}" for column, n in report.rewritten.items())
    unused = ", ".join(report.unused) or "none"
    if report.retired:
        tail = f"field keys retired (removed from the key file): {', '.join(report.retired)}"
    elif report.retire_deferred:
        tail = f"old field keys unused: {unused}; not retired: the key file changed <10 s ago, run again"
    else:
        tail = f"old field keys unused: {unused}"
    return (
        f"rewrapped {report.total} rows under field key {report.current} ({moved}); "
        f"changed meanwhile {report.skipped}; {tail}"
    )


def _status(_args: argparse.Namespace, engine: Engine, keys: KeyStore) -> str:
    with engine.connect() as conn:
        events = outbox_size(conn)
        subs = subscription_cursors(conn)
    lines = [f"outbox events: {events}"]
    lines += [f"subscription {sub_id} crm={crm_id} cursor={cursor}" for sub_id, crm_id, cursor in subs]
    current = keys.field.current
    lines.append(f"field key {current} (current); keys in the file: {', '.join(sorted(keys.field.keys))}")
    in_use = field_keys_in_use(engine)
    for column, counts in in_use.items():
        text = ", ".join(f"{kid}={n}" for kid, n in sorted(counts.items())) or "empty"
        lines.append(f"{column}: {text}")
    lines.append(f"rows under old field keys: {rows_under_old_keys(in_use, current)}")
    return "\n".join(lines)


def _grant_backlog(args: argparse.Namespace, engine: Engine, _keys: KeyStore) -> str:
    """Let a CRM read events written before its registration (``crm_bridge.feed_start``)."""
    with for_writing(engine).begin() as conn:
        old, new = grant_backlog(conn, args.crm, args.from_cursor)
    return f"backlog granted to {args.crm}: feed start {old} -> {new}; reason: {args.reason}"


def _reason(text: str) -> str:
    if len(text.strip()) < 10:
        raise argparse.ArgumentTypeError("a reason of at least 10 characters is required")
    return text.strip()[:200]


def register(commands: Any, add_database_url: Callable[[argparse.ArgumentParser], None]) -> None:
    crm = commands.add_parser("crm", help="CRM bridge: key rotation, re-encryption and status")
    sub = crm.add_subparsers(dest="crm_command", required=True)

    def command(name: str, help_text: str, work: Work, *, audited: bool = True) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        add_database_url(parser)
        parser.set_defaults(handler=lambda a: _run(a, name, work, audited=audited))
        return parser

    rotate = command(
        "rotate-pseudonym-key", "new pseudonym key for a CRM (old -> new mapping sent)", _rotate_pseudonym
    )
    rotate.add_argument("--crm", required=True)
    command("rotate-field-key", "new AES-GCM field key (old kept for reading)", _rotate_field)
    wrap = command(
        "rewrap-fields", "re-encrypt rows under old field keys with the current one, in batches", _rewrap
    )
    wrap.add_argument("--batch-size", type=int, default=500)
    wrap.add_argument("--retire", action="store_true", help="then remove old field keys no row uses")
    command("status", "outbox size, cursors and rows per field key", _status, audited=False)
    backlog = command(
        "grant-backlog",
        "let a CRM read events written before its registration (audited, with a reason)",
        _grant_backlog,
    )
    backlog.add_argument("--crm", required=True)
    backlog.add_argument("--from-cursor", type=int, default=0, help="serve events after this seq (default 0)")
    backlog.add_argument("--reason", type=_reason, required=True)
