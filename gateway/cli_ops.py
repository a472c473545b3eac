"""``carebridge backup`` and ``carebridge restore`` (issue #7; engine in :mod:`gateway.backup`).

* ``backup --output FILE [--key-file K]``: an encrypted archive of the whole
  database.  The key file (``--key-file``, env ``CAREBRIDGE_BACKUP_KEY_FILE``,
  default ``var/backup.key``) is created with 32 random bytes, mode 0600, when
  missing, and the command says so loudly: without that file no archive can
  ever be restored.  The backup is itself recorded in the audit trail (DICOM
  110106 Export) *before* the dump, so the archive contains the record of its
  own making (traceability, Circular 46/2018/TT-BYT Art. 8).
* ``restore --input FILE [--key-file K] [--without-tombstones]``: refuses a missing key
  file (a new key cannot open an old archive), a wrong key, a tampered archive and a
  missing erasure tombstone file (unless ``--without-tombstones``) before touching the
  database; then migrates, re-applies erasure tombstones, lists the request ids of the
  erasures it re-applied (Law 91/2025/QH15 Art. 14), and verifies the audit chain,
  and exits 1 if that verification fails.

Exit codes: 0 done, 1 refused or failed (message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway import backup as engine_backup
from gateway.cli_audit import append_operator_event
from gateway.settings import Settings, settings_from


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "audit_key_file", None):
        overrides["audit_key_file"] = args.audit_key_file
    return settings_from(args, **overrides)


def _key_file(args: argparse.Namespace, settings: Settings) -> str:
    return str(args.key_file or settings.backup.key_file)


def _audit_backup(settings: Settings, output: str) -> str | None:
    """Append the backup's own AuditEvent; returns a warning instead when that is impossible."""
    from audit import export_event

    query = f"carebridge backup --output {Path(output).name}"
    return append_operator_event(
        settings, lambda context, now: export_event(context, recorded_us=now, query=query), "backup"
    )


def _backup(args: argparse.Namespace) -> int:
    settings = _settings(args)
    key_path = _key_file(args, settings)
    try:
        key, created = engine_backup.load_or_create_key(key_path)
        if created:
            print(
                f"created a new backup key {key_path} (mode 0600, key id {engine_backup.key_id(key)}).\n"
                "Keep a copy of this file OUTSIDE this machine (e.g. a password vault): "
                "without it no archive made with it can be restored.",
                file=sys.stderr,
            )
        warning = _audit_backup(settings, args.output)
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        info = engine_backup.backup(settings.database_url, args.output, key)
    except engine_backup.BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"backup {info.backend} -> {info.output} ({info.archive_bytes} bytes, "
        f"AES-256-GCM, key id {info.key_id})"
    )
    return 0


def _restore(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        key = engine_backup.load_key(_key_file(args, settings))
        info = engine_backup.restore(
            settings.database_url,
            args.input,
            key,
            audit_key_file=settings.audit.key_file,
            store_keys=settings.store.key_source,
            tombstone_file=None if args.without_tombstones else settings.privacy.tombstone_path,
        )
    except engine_backup.BackupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for warning in info.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"restored {info.backend} from {args.input}; schema {info.schema_revision}; "
        f"tombstones re-applied: {info.tombstones}; audit: {info.audit.line()}"
    )
    if info.tombstones_skipped:
        print("erasures re-applied: skipped (--without-tombstones)")
    else:  # always listed, so the operator can match them to the privacy requests
        print(f"erasures re-applied: {', '.join(info.reapplied) if info.reapplied else 'none'}")
    return 0


def register(commands: Any, add_database_url: Callable[[argparse.ArgumentParser], None]) -> None:
    def command(name: str, help_text: str, handler: Callable[[argparse.Namespace], int]) -> Any:
        parser = commands.add_parser(name, help=help_text)
        add_database_url(parser)
        parser.add_argument(
            "--key-file",
            default=None,
            help=f"backup key file (env CAREBRIDGE_BACKUP_KEY_FILE, default {Settings().backup.key_file})",
        )
        parser.add_argument(
            "--audit-key-file", default=None, help="audit key file (env CAREBRIDGE_AUDIT_KEY_FILE)"
        )
        parser.set_defaults(handler=handler)
        return parser

    backup = command("backup", "write an encrypted backup of the database", _backup)
    backup.add_argument("--output", required=True, metavar="FILE")
    restore = command("restore", "restore an encrypted backup, migrate and verify the audit chain", _restore)
    restore.add_argument("--input", required=True, metavar="FILE")
    restore.add_argument(
        "--without-tombstones",
        action="store_true",
        help="restore even though the erasure tombstone file (CAREBRIDGE_PRIVACY_TOMBSTONE_FILE) is missing; "
        "erasures made after the backup are then NOT re-applied",
    )
