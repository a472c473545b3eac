"""Re-encrypting stored rows under the current content key, in place and in batches.

Why (ISO/IEC 27001:2022 A.8.24 key rotation): a rotation only changes the key
*new* rows are sealed under; rows sealed before, and rows written before
encryption existed (plaintext), must be moved to the new key before the old
one can be retired.  The content does not change, so this is not a new FHIR
version: each row's ciphertext is replaced where it stands.

* Rows are found with a prefix comparison in SQL (the envelope starts with
  the key id), so only rows that need work are read.
* Each batch is its own short write transaction: carebridge keeps serving.
  An update only applies if the row still holds the bytes that were read
  (``content = :old``), so a concurrent write of a new version is never
  overwritten with stale content: that row is already under a current key
  (the batching rules are ``fhir_store.batch_rewrite``'s, shared with the
  side-table columns and the CRM bridge's field-key pass).
* Text columns that other packages declared sealed (``fhir_store.sealed_columns``:
  privacy requests, receipts, HIS booking answers) are moved the same way,
  reported as ``table.column``.
* When nothing is left under a content key, the key is marked retired in the
  registry (it may then leave the key file, once no backup needs it).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Column, ColumnElement, Engine, Table, func, select, update

from fhir_store import sealed_columns
from fhir_store.batch_rewrite import rewrite_rows
from fhir_store.content_cipher import MAGIC, StoreCipher, envelope_kid
from fhir_store.database import writer
from fhir_store.instants import now_us
from fhir_store.key_registry import lock_registry, registered
from fhir_store.schema import hl7_journal, resource_current, resource_version, store_key

SEALED_TABLES = ("resource_version", "resource_current", "hl7_journal")
_HEAD = len(MAGIC) + 1 + 8  # envelope header with a key id of up to 8 characters


@dataclass
class RewrapReport:
    """Rows re-encrypted per table and content keys retired (no patient data)."""

    rewritten: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEALED_TABLES, 0))
    skipped: int = 0  # changed concurrently: the new content is sealed under a current key already
    retired: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.rewritten.values())


def _stale(column: Column[Any], prefix: bytes) -> ColumnElement[bool]:
    """Not sealed under the current key: legacy plaintext or another key id."""
    return func.substr(column, 1, len(prefix)) != prefix


def _content(table: Table) -> Column[Any]:
    return table.c.raw if table is hl7_journal else table.c.content


def _layout(table: Table) -> tuple[list[Column[Any]], list[Column[Any]]]:
    """(columns walking and naming a row, columns its associated data is made of)."""
    c = table.c
    if table is resource_version:
        return [c.seq], [c.res_type, c.res_id, c.version]
    if table is resource_current:
        return [c.res_type, c.res_id], [c.version]
    return [c.id], [c.sending_application, c.sending_facility, c.control_id]


def rewrap_table(
    engine: Engine,
    cipher: StoreCipher,
    table: Table,
    report: RewrapReport,
    *,
    batch: int = 500,
    progress: Callable[[str, int], None] | None = None,
) -> None:
    content = _content(table)
    order, context = _layout(table)

    def reseal(row: Mapping[Any, Any]) -> dict[str, bytes]:
        stored = bytes(row[content])
        if table is hl7_journal:
            app, fac, control = (row[col] for col in context)
            plain = cipher.open_journal(app, fac, control, stored)
            return {content.key: cipher.seal_journal(app, fac, control, plain)}
        res_type, res_id, version = row[table.c.res_type], row[table.c.res_id], row[table.c.version]
        plain = cipher.open_resource(res_type, res_id, version, stored)
        return {content.key: cipher.seal_resource(res_type, res_id, version, plain)}

    done, skipped = rewrite_rows(
        engine,
        table,
        order=order,
        context=context,
        guard=[content],
        where=_stale(content, cipher.current_prefix()),
        rewrite=reseal,
        batch=batch,
        progress=progress,
    )
    report.rewritten[table.name] += done
    report.skipped += skipped


def keys_in_use(engine: Engine, cipher: StoreCipher | None = None) -> dict[str, dict[str, int]]:
    """``{table: {kid or "plaintext": rows}}`` for every sealed table (``carebridge store status``).

    With ``cipher``, also ``{table.column: ...}`` for the registered sealed text
    columns that hold values (counted per key id the cipher knows).
    """
    out: dict[str, dict[str, int]] = {}
    with engine.connect() as conn:
        for table in (resource_version, resource_current, hl7_journal):
            content = _content(table)
            head = func.substr(content, 1, _HEAD)  # plaintext rows share a few prefixes too
            counts: dict[str, int] = {}
            for prefix, count in conn.execute(
                select(head, func.count()).where(content.is_not(None)).group_by(head)
            ):
                kid = envelope_kid(bytes(prefix)) or "plaintext"
                counts[kid] = counts.get(kid, 0) + int(count)
            out[table.name] = counts
    if cipher is not None:
        out.update(sealed_columns.counts(engine, cipher))
    return out


def rewrap(
    engine: Engine,
    cipher: StoreCipher,
    *,
    batch: int = 500,
    progress: Callable[[str, int], None] | None = None,
) -> RewrapReport:
    """Move every sealed table to the current content key; retire content keys nothing uses any more."""
    report = RewrapReport()
    for table in (resource_version, resource_current, hl7_journal):
        rewrap_table(engine, cipher, table, report, batch=batch, progress=progress)
    for name, spec in sorted(sealed_columns.REGISTRY.items()):
        done, skipped = sealed_columns.rewrap_column(engine, cipher, spec, batch=batch, progress=progress)
        if done:  # reported only when something moved: most databases have few such rows
            report.rewritten[name] = done
        report.skipped += skipped
    in_use = {kid for counts in keys_in_use(engine, cipher).values() for kid in counts}
    with writer(engine).begin() as conn:
        lock_registry(conn)
        for (purpose, kid), (_, retired) in sorted(registered(conn).items()):
            if purpose == "content" and retired is None and kid != cipher.content_kid and kid not in in_use:
                conn.execute(
                    update(store_key)
                    .where(store_key.c.purpose == "content", store_key.c.kid == kid)
                    .values(retired_us=now_us())
                )
                report.retired.append(kid)
    return report
