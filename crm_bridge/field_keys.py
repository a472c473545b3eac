"""Moving the CRM bridge's sealed columns to the current field key, and counting what is left.

Why (ISO/IEC 27001:2022 A.8.24 key management and rotation; Decree
356/2025/ND-CP Art. 9): ``carebridge crm rotate-field-key`` only changes the
key *new* rows are sealed under.  Outbox payloads (which may carry consented
contact data), webhook signing secrets and queued SIU^S12 messages (record
number) sealed before stay under the old key until they are re-encrypted; only
then can the old key leave the key file.

Each of those columns stores its key id in a column of its own, so the rows to
move are found by comparing that id with the current one.  The pass uses the
store's batch loop (``fhir_store.batch_rewrite``): short write transactions
while carebridge runs, an update applies only if the row still holds what was
read (a row purged by an erasure, or a secret replaced, meanwhile is skipped),
and an interrupted run resumes where it stopped when started again.  The
plaintext and the associated data (the row's event id, subscription id or
control id) do not change, so what the CRM and the HIS receive is unchanged.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, Engine, Table, func, select

from consent import RELOAD_EVERY_S, KeyStore
from crm_bridge.schema import crm_his_outbox, crm_outbox, crm_subscription
from fhir_store import rewrite_rows

SETTLE_S = 2 * RELOAD_EVERY_S  # after a key-file change, before an old field key may be retired


@dataclass(frozen=True)
class FieldSealed:
    """A column sealed under the field key: its key-id column, row key and associated-data column."""

    table: Table
    blob: str
    kid: str
    order: str
    aad: str

    @property
    def name(self) -> str:
        return f"{self.table.name}.{self.blob}"

    def column(self, name: str) -> Column[Any]:
        return self.table.c[name]


#: Every column sealed with ``KeyStore.cipher`` (outbox: ``append_events``; delivery:
#: ``Subscriptions``; booking: ``Booking.request``).  A new one must be listed here.
FIELD_SEALED = (
    FieldSealed(crm_outbox, blob="payload", kid="key_id", order="seq", aad="event_id"),
    FieldSealed(crm_subscription, blob="secret", kid="secret_key_id", order="id", aad="id"),
    FieldSealed(crm_his_outbox, blob="message", kid="key_id", order="id", aad="control_id"),
)


@dataclass
class FieldRewrapReport:
    """Rows moved per column, rows changed meanwhile, and old keys no row needs (no patient data)."""

    current: str
    rewritten: dict[str, int] = field(default_factory=lambda: {s.name: 0 for s in FIELD_SEALED})
    skipped: int = 0
    unused: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    retire_deferred: bool = False

    @property
    def total(self) -> int:
        return sum(self.rewritten.values())


def field_keys_in_use(engine: Engine) -> dict[str, dict[str, int]]:
    """``{table.column: {kid: rows}}`` for every field-sealed column (``carebridge crm status``)."""
    out: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for spec in FIELD_SEALED:
            kid = spec.column(spec.kid)
            rows = conn.execute(select(kid, func.count()).group_by(kid)).all()
            out[spec.name] = {str(k): int(n) for k, n in rows}
    return out


def rows_under_old_keys(in_use: Mapping[str, Mapping[str, int]], current: str) -> int:
    return sum(n for counts in in_use.values() for kid, n in counts.items() if kid != current)


def _resealer(keys: KeyStore, spec: FieldSealed) -> Callable[[Mapping[Any, Any]], dict[str, Any]]:
    kid, blob, aad = spec.column(spec.kid), spec.column(spec.blob), spec.column(spec.aad)

    def reseal(row: Mapping[Any, Any]) -> dict[str, Any]:
        context = str(row[aad]).encode()
        plain = keys.cipher.open(str(row[kid]), bytes(row[blob]), context)
        new_kid, sealed = keys.cipher.seal(plain, context)
        return {spec.kid: new_kid, spec.blob: sealed}

    return reseal


def key_file_settled(keys: KeyStore, now: float | None = None) -> bool:
    """True when the key file was last rewritten long enough ago that every process follows it.

    A running process may seal under the previous current key for up to
    ``RELOAD_EVERY_S`` after a rotation; retiring that key before then could
    leave a row nobody can open.
    """
    if keys.path is None:
        return True
    try:
        age = (time.time() if now is None else now) - keys.path.stat().st_mtime
    except FileNotFoundError:
        return True
    return age >= SETTLE_S


def rewrap_fields(
    engine: Engine,
    keys: KeyStore,
    *,
    batch: int = 500,
    retire: bool = False,
    progress: Callable[[str, int], None] | None = None,
) -> FieldRewrapReport:
    """Re-seal every field-sealed row not under the current field key; optionally retire old keys.

    Old keys that no row uses afterwards are listed in ``unused``; with
    ``retire`` they are removed from the key file (``KeyStore.retire_field_keys``),
    unless the file changed too recently (:func:`key_file_settled`:
    ``retire_deferred``, run again).
    """
    current = keys.field.current
    report = FieldRewrapReport(current)
    for spec in FIELD_SEALED:
        kid, blob, aad = spec.column(spec.kid), spec.column(spec.blob), spec.column(spec.aad)
        done, skipped = rewrite_rows(
            engine,
            spec.table,
            order=[spec.column(spec.order)],
            context=[] if spec.aad == spec.order else [aad],
            guard=[kid, blob],
            where=kid != current,
            rewrite=_resealer(keys, spec),
            batch=batch,
            progress=progress,
            name=spec.name,
        )
        report.rewritten[spec.name] = done
        report.skipped += skipped
    in_use = {k for counts in field_keys_in_use(engine).values() for k in counts}
    report.unused = sorted(k for k in keys.field.keys if k != keys.field.current and k not in in_use)
    if retire and report.unused:
        if key_file_settled(keys):
            report.retired = keys.retire_field_keys(report.unused)
        else:
            report.retire_deferred = True
    return report
