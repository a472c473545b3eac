"""Rewriting selected rows in place, in short batches, without losing a concurrent write.

Why one loop: every key rotation ends with the same pass — the store's
content (``fhir_store.rewrap``), the sealed side-table text
(``fhir_store.sealed_columns``) and the CRM bridge's field-key columns
(``crm_bridge.field_keys``) each re-encrypt the rows still under an old key
while carebridge keeps running.  The rules that make that safe are the same
for all of them and are kept here once:

* Rows are selected by a SQL condition (``where``: "not under the current
  key"), so only rows that need work are read, and walked in key order
  (keyset pagination on ``order``), so each row is visited at most once even
  though rewritten rows leave the selection.
* Each batch is read outside any transaction and written in its own short
  write transaction: readers and writers are blocked for one batch at most,
  and an interrupted run keeps what it committed (running it again resumes:
  rewritten rows no longer match ``where``).
* An update applies only if the row still holds what was read (the ``guard``
  columns compare equal), so a row that changed or vanished meanwhile is
  never overwritten with stale content; it is counted as skipped (its new
  content was written under a current key anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, ColumnElement, Engine, Table, select, tuple_, update

from fhir_store.database import writer

Rewrite = Callable[[Mapping[Any, Any]], Mapping[str, Any]]
"""Given a row (mapping keyed by the selected ``Column`` objects), the new values by column name."""


def rewrite_rows(
    engine: Engine,
    table: Table,
    *,
    order: Sequence[Column[Any]],
    guard: Sequence[Column[Any]],
    where: ColumnElement[bool],
    rewrite: Rewrite,
    context: Sequence[Column[Any]] = (),
    batch: int = 500,
    progress: Callable[[str, int], None] | None = None,
    name: str | None = None,
) -> tuple[int, int]:
    """Rewrite every row of ``table`` matching ``where``; returns (rewritten, skipped).

    ``order`` must identify a row (primary key or unique); ``context`` are
    further columns ``rewrite`` reads; ``guard`` are the columns that must
    still hold the values read (normally the ones being rewritten).
    ``progress(name, rewritten so far)`` is called after each batch.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    columns = [*order, *context, *guard]
    identity = [*order, *guard]
    label = name or table.name
    rewritten = skipped = 0
    after: tuple[Any, ...] | None = None
    while True:
        stmt = select(*columns).where(where)
        if after is not None:
            stmt = stmt.where(tuple_(*order) > tuple_(*after) if len(order) > 1 else order[0] > after[0])
        with engine.connect() as conn:
            rows = conn.execute(stmt.order_by(*order).limit(batch)).all()
        if not rows:
            return rewritten, skipped
        with writer(engine).begin() as conn:
            for row in rows:
                values = row._mapping
                result = conn.execute(
                    update(table)
                    .where(*(column == values[column] for column in identity))
                    .values(dict(rewrite(values)))
                )
                if result.rowcount:
                    rewritten += 1
                else:
                    skipped += 1
        after = tuple(rows[-1][: len(order)])
        if progress is not None:
            progress(label, rewritten)
