"""``carebridge store status|rotate-key|rewrap|reindex``: keys of the FHIR store's encryption at rest.

Why (ISO/IEC 27001:2022 A.8.24 key management and rotation; issue #5): resource
content and HL7 messages are sealed under content keys, identifier and contact
values are blinded under a blind-index key (``fhir_store.content_cipher``).

* ``status``: rows per key id in every sealed table and sealed side-table
  column (``fhir_store.sealed_columns``), the registered keys
  (fingerprints only) and the blind-index key: what a rotation still has to move.
* ``rotate-key``: a new current content key in the key file (old keys kept to
  read existing rows).  Running processes pick it up within seconds.
* ``rewrap [--batch-size N]``: re-encrypts, in place and in small batches while
  carebridge runs, every row still under an old key or still plaintext; then
  marks unused content keys retired.
* ``reindex [--rotate-blind-key]``: rebuilds the blinded index rows and
  identifier claims from the content, in one transaction; with
  ``--rotate-blind-key`` under a new blind-index key.  Stop carebridge first:
  running processes keep blinding lookups with the key they started with.

``rotate-key``, ``rewrap`` and ``reindex`` each append one AuditEvent
(DICOM 110113 Security Alert, subtype ``store-<command>``).  Nothing printed
is patient data.  Exit codes: 0 done, 1 refused or failed (message on stderr).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from fhir_store import (
    StoreCipher,
    for_writing,
    keys_in_use,
    make_engine,
    open_cipher,
    register_key,
    registered,
    rewrap_store,
    rotate_blind_key,
    upgrade,
)
from gateway.cli_audit import run_key_command
from gateway.registration import register_all
from gateway.settings import Settings, settings_from


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if args.key_file:
        overrides["store_key_file"] = args.key_file
    return settings_from(args, **overrides)


def _run(args: argparse.Namespace, command: str, work: Callable[[Settings, Any, StoreCipher], str]) -> int:
    """Open the database and the checked store keys, run ``work``, audit its outcome line."""
    settings = _settings(args)
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url, pool_size=2)

    def run() -> str:
        register_all()  # the sealed columns of every package: rewrap and status must see them
        return work(settings, engine, open_cipher(engine, settings.store.key_source))

    try:
        return run_key_command(settings, f"store-{command}", run, audited=command != "status")
    finally:
        engine.dispose()


def _status(_settings: Settings, engine: Any, cipher: StoreCipher) -> str:
    with engine.connect() as conn:
        entries = registered(conn)
    lines = [f"content key {cipher.content_kid} (current); blind-index key {cipher.blind_kid}"]
    for (purpose, kid), (fingerprint, retired) in sorted(entries.items()):
        state = "retired" if retired is not None else "in use"
        lines.append(f"key {purpose} {kid} fingerprint {fingerprint} {state}")
    for table, counts in keys_in_use(engine, cipher).items():
        text = ", ".join(f"{kid}={n}" for kid, n in sorted(counts.items())) or "empty"
        lines.append(f"{table}: {text}")
    return "\n".join(lines)


def _rotate(_settings: Settings, engine: Any, cipher: StoreCipher) -> str:
    old, new = cipher.keys.rotate_content()
    with for_writing(engine).begin() as conn:
        register_key(conn, "content", new, cipher.keys.fingerprints()[("content", new)])
    return (
        f"content key {old} -> {new} in {cipher.keys.location} (old key kept to read existing rows); "
        "run `carebridge store rewrap` once running processes use it (restart, or wait 10 s)"
    )


def _rewrap_with(batch: int) -> Callable[[Settings, Any, StoreCipher], str]:
    def work(_settings: Settings, engine: Any, cipher: StoreCipher) -> str:
        report = rewrap_store(engine, cipher, batch=batch)
        moved = ", ".join(f"{table}={n}" for table, n in report.rewritten.items())
        retired = ", ".join(report.retired) or "none"
        return (
            f"rewrapped {report.total} rows under {cipher.content_kid} ({moved}); "
            f"changed meanwhile {report.skipped}; content keys retired: {retired}"
        )

    return work


def _reindex_with(rotate: bool) -> Callable[[Settings, Any, StoreCipher], str]:
    def work(_settings: Settings, engine: Any, cipher: StoreCipher) -> str:
        from fhir_store import reindex

        with for_writing(engine).begin() as conn:
            if rotate:
                old, new, count = rotate_blind_key(conn, cipher)
                return f"blind-index key {old} -> {new}; {count} resources reindexed (restart carebridge now)"
            count = reindex(conn, cipher.open_resource, cipher.blind)
        return f"{count} resources reindexed under blind-index key {cipher.blind_kid}"

    return work


def register(commands: Any, add_database_url: Callable[[argparse.ArgumentParser], None]) -> None:
    store = commands.add_parser("store", help="FHIR store encryption keys: status, rotation, rewrap, reindex")
    sub = store.add_subparsers(dest="store_command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        add_database_url(parser)
        parser.add_argument("--key-file", default=None, help="store key file (env CAREBRIDGE_STORE_KEY_FILE)")
        return parser

    command("status", "rows per key id and the registered keys").set_defaults(
        handler=lambda a: _run(a, "status", _status)
    )
    command("rotate-key", "new current content key (old keys kept for reading)").set_defaults(
        handler=lambda a: _run(a, "rotate-key", _rotate)
    )
    wrap = command("rewrap", "re-encrypt rows under old keys or in plaintext, in place, in batches")
    wrap.add_argument("--batch-size", type=int, default=500)
    wrap.set_defaults(handler=lambda a: _run(a, "rewrap", _rewrap_with(a.batch_size)))
    index = command("reindex", "rebuild blinded index rows and claims (stop carebridge first)")
    index.add_argument("--rotate-blind-key", action="store_true", help="under a new blind-index key")
    index.set_defaults(handler=lambda a: _run(a, "reindex", _reindex_with(a.rotate_blind_key)))
