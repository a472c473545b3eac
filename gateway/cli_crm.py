"""``carebridge crm rotate-pseudonym-key|rotate-field-key|status``: CRM bridge key management.

Why (ISO/IEC 27001:2022 A.8.24 key management and rotation): pseudonym keys
rotate per CRM without breaking the CRM's links (the bridge delivers an old →
new mapping as a ``pseudonym.rotated`` event); field keys rotate and every
sealed row stays readable through its key id.  No patient data is printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from consent.keys import KeyStore
from crm_bridge.config import CrmSettings
from crm_bridge.outbox import rotate_pseudonyms
from crm_bridge.schema import crm_outbox, crm_subscription
from fhir_store.database import is_sqlite, make_engine
from fhir_store.migrations import upgrade
from gateway.settings import Settings


def _open(args: argparse.Namespace) -> tuple[Any, KeyStore]:
    settings = Settings.from_env(None, database_url=args.database_url)
    upgrade(settings.database_url)
    crm = CrmSettings.from_sources(settings.extra)
    return make_engine(settings.database_url, pool_size=1), KeyStore.load_or_create(crm.key_file)


def _rotate_pseudonym(args: argparse.Namespace) -> int:
    engine, keys = _open(args)
    writer = engine.execution_options(sqlite_begin="IMMEDIATE") if is_sqlite(engine) else engine
    with writer.begin() as conn:
        count = rotate_pseudonyms(conn, keys, args.crm)
    print(f"rotated {args.crm} to {keys.ring_for(args.crm).current}; {count} pseudonym links re-keyed")
    return 0


def _rotate_field(args: argparse.Namespace) -> int:
    _engine, keys = _open(args)
    old, new = keys.rotate_field_key()
    print(f"field key {old} -> {new} (old key kept to read existing rows)")
    return 0


def _status(args: argparse.Namespace) -> int:
    engine, _keys = _open(args)
    with engine.connect() as conn:
        events = conn.execute(select(func.count()).select_from(crm_outbox)).scalar()
        subs = conn.execute(
            select(crm_subscription.c.id, crm_subscription.c.crm_id, crm_subscription.c.cursor)
        ).all()
    print(f"outbox events: {events}")
    for sub_id, crm_id, cursor in subs:
        print(f"subscription {sub_id} crm={crm_id} cursor={cursor}")
    return 0


def register(commands: Any, add_database_url: Callable[[argparse.ArgumentParser], None]) -> None:
    crm = commands.add_parser("crm", help="CRM bridge: key rotation and status")
    sub = crm.add_subparsers(dest="crm_command", required=True)
    rotate = sub.add_parser(
        "rotate-pseudonym-key", help="new pseudonym key for a CRM (old -> new mapping sent)"
    )
    rotate.add_argument("--crm", required=True)
    add_database_url(rotate)
    rotate.set_defaults(handler=_rotate_pseudonym)
    field = sub.add_parser("rotate-field-key", help="new AES-GCM field key (old kept for reading)")
    add_database_url(field)
    field.set_defaults(handler=_rotate_field)
    status = sub.add_parser("status", help="outbox size and subscription cursors")
    add_database_url(status)
    status.set_defaults(handler=_status)
