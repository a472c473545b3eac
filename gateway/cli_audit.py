"""``carebridge audit verify|export|public-key|checkpoint`` (contract: DESIGN.md §2).

* ``verify``: exit 0 and print exactly ``ok <n> events`` when the chain, MACs
  and checkpoint signatures are intact; else exit 1 and print
  ``bad seq <seq> event <id>: <reason>`` for the first bad event.
  ``--public-key PEM`` verifies with an exported public key only (no key file:
  checkpoints are checked, per-event MACs are not).  ``--anchors FILE`` also
  checks the checkpoints kept outside the database (audit.anchors): exit 1 when
  an anchored event is missing or changed; a second line always reports the
  events after the newest anchor as ``unanchored`` (exit 1 with ``--strict``
  when there are any).
* ``export --format csv|ndjson [--patient ID] [--since ISO] [--until ISO]``: to
  stdout; the export itself is audited (DICOM 110106 Export).
* ``public-key``: the PEM of the checkpoint-signing key (give it to auditors).
* ``checkpoint``: sign the current chain head now.
"""

from __future__ import annotations

import argparse
import getpass
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from audit import (
    DCM_SYSTEM,
    SERIOUS_FAILURE,
    SUCCESS,
    AnchorError,
    AuditFilter,
    AuditHook,
    AuditKeys,
    VerifyKey,
    build_event,
    coding,
    export_audit,
    read_anchors,
    verify_engine,
)
from common import InvalidInput, KeyMaterialError
from fhir_store import RequestContext, make_engine, parse_fhir_instant_range, upgrade
from gateway.settings import Settings, settings_from


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    if getattr(args, "key_file", None):
        overrides["audit_key_file"] = args.key_file
    return settings_from(args, **overrides)


def operator_context() -> RequestContext:
    """The CLI operator as the audit agent (OS account name: not patient data)."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return RequestContext(
        request_id=f"cli-{uuid.uuid4()}",
        client_id=f"cli:{user}",
        role="operator",
        channel="internal",
        source_address="localhost",
    )


def append_operator_event(
    settings: Settings, event_for: Callable[[RequestContext, int], dict[str, Any]], what: str
) -> str | None:
    """Append one AuditEvent for an operator command; returns a warning instead when that is impossible.

    Without the audit key file we do not create one: a fresh key would sign
    this event under a key the earlier events do not match.  ``event_for``
    gets the operator context and the recording instant.
    """
    from fhir_store import now_us

    if not Path(settings.audit.key_file).exists():
        return f"{what} not recorded in the audit trail: no audit key file at {settings.audit.key_file}"
    upgrade(settings.migration_url)
    engine = make_engine(settings.database_url, pool_size=1)
    hook = AuditHook.from_settings(engine, settings.audit)
    try:
        hook.append([event_for(operator_context(), now_us())])
    finally:
        hook.close()
        engine.dispose()
    return None


SECURITY_ALERT = coding(DCM_SYSTEM, "110113", "Security Alert")


def record_key_command(settings: Settings, subtype: str, outcome_desc: str, *, ok: bool) -> None:
    """One AuditEvent for a key-management command (rotate, rewrap, reindex), refused ones too.

    Why (ISO/IEC 27001:2022 A.8.15, A.8.24): who moved which data to which key
    and when must be provable; DICOM 110113 Security Alert, subtype naming the
    command (``store-rewrap``, ``crm-rewrap-fields``, ...).  ``outcome_desc``
    holds key ids and counts only.  A warning on stderr when it cannot be recorded.
    """

    def event(context: RequestContext, now: int) -> dict[str, Any]:
        built = build_event(
            context=context,
            event_type="110113",
            subtype=subtype,
            action="E",
            outcome=SUCCESS if ok else SERIOUS_FAILURE,
            outcome_desc=outcome_desc,
            recorded_us=now,
        )
        built["type"] = SECURITY_ALERT  # key management: a security configuration change
        return built

    warning = append_operator_event(settings, event, subtype.replace("-", " ", 1))
    if warning:
        print(f"warning: {warning}", file=sys.stderr)


def run_key_command(
    settings: Settings, subtype: str, work: Callable[[], str], *, audited: bool = True
) -> int:
    """Run a key-management command: print its one-line outcome, audit it; exit 0, or 1 when refused.

    A refusal (``KeyMaterialError``: missing or foreign keys, keys held in the
    environment) is printed on stderr and audited as a failure.
    """
    try:
        line = work()
    except KeyMaterialError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if audited:
            record_key_command(settings, subtype, f"refused: {type(exc).__name__}", ok=False)
        return 1
    print(line)
    if audited:
        record_key_command(settings, subtype, line, ok=True)
    return 0


def _verify(args: argparse.Namespace) -> int:
    settings = _settings(args)
    trusted: list[VerifyKey] = []
    keys: AuditKeys | None = None
    if args.public_key:
        trusted.append(VerifyKey.from_pem(Path(args.public_key).read_bytes()))
    elif Path(settings.audit.key_file).exists():
        keys = AuditKeys.load(settings.audit.key_file)
    anchors = None
    if args.anchors:
        try:
            anchors = read_anchors(args.anchors)
        except (OSError, AnchorError) as exc:
            print(f"error: cannot read anchors: {exc}", file=sys.stderr)
            return 1
        if keys is None and not trusted:
            print("error: anchors need the audit key file or --public-key to check", file=sys.stderr)
            return 1
    engine = make_engine(settings.database_url, pool_size=1)
    try:
        result = verify_engine(engine, keys, trusted, anchors)
    finally:
        engine.dispose()
    if keys is None and not trusted and result.events:
        print(f"error: no audit key file at {settings.audit.key_file}; pass --public-key", file=sys.stderr)
        return 1
    print(result.line())
    if anchors is not None and result.ok:
        print(result.anchor_line())
        if args.strict and result.unanchored:
            return 1
    return 0 if result.ok else 1


def _hook(settings: Settings) -> AuditHook:
    upgrade(settings.migration_url)
    engine = make_engine(settings.database_url, pool_size=2)
    return AuditHook.from_settings(engine, settings.audit)


def _instant(text: str | None, *, end: bool) -> int | None:
    if text is None:
        return None
    low, high = parse_fhir_instant_range(text, location="--until" if end else "--since")
    return high + 1 if end else low  # AuditFilter.until_us is exclusive


def _export(args: argparse.Namespace) -> int:
    try:
        flt = AuditFilter(
            patient=args.patient,
            since_us=_instant(args.since, end=False),
            until_us=_instant(args.until, end=True),
        )
    except InvalidInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    hook = _hook(_settings(args))
    try:
        export_audit(hook, sys.stdout, args.format, flt, operator_context())
    finally:
        hook.close()
        hook.engine.dispose()
    sys.stdout.flush()
    return 0


def _public_key(args: argparse.Namespace) -> int:
    keys = AuditKeys.load_or_create(_settings(args).audit.key_file)
    sys.stdout.write(keys.verify_key.public_pem())
    return 0


def _checkpoint(args: argparse.Namespace) -> int:
    hook = _hook(_settings(args))
    try:
        seq = hook.checkpoint()  # anchored too (audit_anchor_file / audit_anchor_url)
    finally:
        hook.close()
        hook.engine.dispose()
    print("no events" if seq is None else f"checkpoint at seq {seq}")
    return 0


def register(commands: Any, add_database_url: Callable[[argparse.ArgumentParser], None]) -> None:
    audit = commands.add_parser("audit", help="verify, export and sign the audit trail")
    sub = audit.add_subparsers(dest="audit_command", required=True)

    def command(name: str, help_text: str, handler: Callable[[argparse.Namespace], int]) -> Any:
        parser = sub.add_parser(name, help=help_text)
        add_database_url(parser)
        parser.add_argument("--key-file", default=None, help="audit key (env CAREBRIDGE_AUDIT_KEY_FILE)")
        parser.set_defaults(handler=handler)
        return parser

    verify = command("verify", "recompute the hash chain and checkpoint signatures", _verify)
    verify.add_argument("--public-key", default=None, help="verify checkpoints with this PEM only")
    verify.add_argument("--anchors", default=None, help="anchor file: checkpoints kept outside the database")
    verify.add_argument("--strict", action="store_true", help="with --anchors: exit 1 on unanchored events")

    exp = command("export", "export audit events to stdout (audited)", _export)
    exp.add_argument("--format", choices=("csv", "ndjson"), required=True)
    exp.add_argument("--patient", default=None, help="Patient id (events about this patient)")
    exp.add_argument("--since", default=None, help="FHIR date/instant, inclusive")
    exp.add_argument("--until", default=None, help="FHIR date/instant, inclusive of that day/instant")

    command("public-key", "print the checkpoint-signing public key (PEM)", _public_key)
    command("checkpoint", "sign the current chain head now", _checkpoint)
