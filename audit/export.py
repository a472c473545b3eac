"""Compliance queries over the audit trail and exports (CSV, NDJSON).

Why: Circular 46/2018/TT-BYT Art. 8 and Law 91/2025 give patients and the
compliance officer the right to know who accessed a record; ISO/IEC
27001:2022 A.8.15 requires the logs to be reviewable.  :func:`search_audit`
backs ``GET /fhir/AuditEvent``; :func:`export` backs ``carebridge audit
export``.  Looking at the audit trail is itself an access to personal data,
so every export appends its own AuditEvent (DICOM 110106 Export) *before*
streaming, and the stream stops at the rows that existed then.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any, Literal

from sqlalchemy import Connection, Select, func, or_, select

from audit.events import export_event, format_recorded
from audit.hooks import AuditHook
from audit.schema import audit_event, audit_event_key
from fhir_store import RequestContext, format_instant, now_us

CSV_COLUMNS = (
    "seq",
    "event_id",
    "recorded",
    "action",
    "type",
    "subtype",
    "outcome",
    "agent",
    "patient_id",
    "entity",
    "purpose",
    "request_id",
    "hash",
)


@dataclass(frozen=True)
class AuditFilter:
    """Search parameters of ``GET /fhir/AuditEvent`` (all optional, AND-ed)."""

    patient: str | None = None
    agent: str | None = None
    entity: str | None = None
    since_us: int | None = None  # inclusive
    until_us: int | None = None  # exclusive
    action: str | None = None
    outcome: str | None = None
    type: str | None = None
    subtype: str | None = None
    purpose: str | None = None
    max_seq: int | None = None  # inclusive

    def describe(self) -> str:
        """The filter as a query string (recorded in the export's own AuditEvent)."""
        parts = []
        for name in ("patient", "agent", "entity", "action", "outcome", "type", "subtype", "purpose"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value}")
        if self.since_us is not None:
            parts.append(f"date=ge{format_instant(self.since_us)}")
        if self.until_us is not None:
            parts.append(f"date=lt{format_instant(self.until_us)}")
        return "&".join(parts)


def _keyed(key: str, *, patient: bool = False) -> Select[Any]:
    """Seqs of the events with this search key (the ``(key, seq)`` index of audit_event_key)."""
    k = audit_event_key.c
    stmt = select(k.seq).where(k.key == key)
    return stmt.where(k.patient) if patient else stmt


def _where(stmt: Select[Any], flt: AuditFilter) -> Select[Any]:
    ae = audit_event.c
    if flt.patient is not None:
        pid = flt.patient.removeprefix("Patient/")
        stmt = stmt.where(ae.seq.in_(_keyed(f"Patient/{pid}", patient=True)))
    if flt.entity is not None:
        # the key is the unversioned reference; the column says which version the event named
        stmt = stmt.where(ae.seq.in_(_keyed(flt.entity.split("/_history/", 1)[0])))
        stmt = stmt.where(or_(ae.entity == flt.entity, ae.entity.startswith(flt.entity + "/_history/")))
    for name in ("agent", "action", "outcome", "type", "subtype", "purpose"):
        value = getattr(flt, name)
        if value is not None:
            stmt = stmt.where(ae[name] == value)
    if flt.since_us is not None:
        stmt = stmt.where(ae.recorded_us >= flt.since_us)
    if flt.until_us is not None:
        stmt = stmt.where(ae.recorded_us < flt.until_us)
    if flt.max_seq is not None:
        stmt = stmt.where(ae.seq <= flt.max_seq)
    return stmt


def search_audit(
    conn: Connection,
    *,
    patient: str | None = None,
    agent: str | None = None,
    entity: str | None = None,
    since_us: int | None = None,
    until_us: int | None = None,
    action: str | None = None,
    outcome: str | None = None,
    type: str | None = None,
    subtype: str | None = None,
    purpose: str | None = None,
    count: int = 50,
    offset: int = 0,
    newest_first: bool = True,
    max_seq: int | None = None,
) -> tuple[list[bytes], int]:
    """One page of matching AuditEvents (their stored canonical JSON bytes) and the total.

    ``patient`` accepts ``123`` or ``Patient/123``; ``entity`` a reference
    (matches every version); dates are microseconds, ``since`` inclusive,
    ``until`` exclusive.  The HTTP layer must audit the query itself (a
    ``search-type`` access event with the query string), as for any search.
    ``max_seq`` (inclusive) freezes the result for paging: every page request
    appends its own event, which would otherwise shift a newest-first page.
    """
    flt = AuditFilter(
        patient, agent, entity, since_us, until_us, action, outcome, type, subtype, purpose, max_seq
    )
    order = audit_event.c.seq.desc() if newest_first else audit_event.c.seq
    page = conn.execute(
        _where(select(audit_event.c.content), flt).order_by(order).limit(count).offset(offset)
    ).all()
    total = conn.execute(_where(select(func.count()).select_from(audit_event), flt)).scalar_one()
    return [bytes(r[0]) for r in page], int(total)


def _stream(conn: Connection, flt: AuditFilter, batch: int = 1000) -> Iterator[Any]:
    after = 0
    while True:
        rows = conn.execute(
            _where(select(audit_event), flt)
            .where(audit_event.c.seq > after)
            .order_by(audit_event.c.seq)
            .limit(batch)
        ).all()
        if not rows:
            return
        yield from rows
        after = int(rows[-1].seq)


def _patients(conn: Connection, seqs: list[int]) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    if seqs:
        k = audit_event_key.c
        rows = conn.execute(
            select(k.seq, k.key)
            .where(k.seq.in_(seqs), k.patient)
            .order_by(k.seq, k.key)  # the primary key's order
        )
        for seq, key in rows:
            out.setdefault(int(seq), []).append(str(key).removeprefix("Patient/"))
    return out


def export(
    hook: AuditHook,
    out: IO[str],
    fmt: Literal["csv", "ndjson"],
    flt: AuditFilter,
    context: RequestContext,
) -> int:
    """Write matching events to ``out``; the export is audited first. Returns the row count."""
    query = f"format={fmt}" + (f"&{flt.describe()}" if flt.describe() else "")
    patients = [flt.patient.removeprefix("Patient/")] if flt.patient else []
    own_seq = hook.append([export_event(context, recorded_us=now_us(), query=query, patient_ids=patients)])
    bounded = AuditFilter(**{**flt.__dict__, "max_seq": own_seq - 1})
    writer = csv.writer(out, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    rows = 0
    with hook.engine.connect() as conn:
        pending: list[Any] = []
        for row in _stream(conn, bounded):
            pending.append(row)
            if len(pending) >= 1000:
                rows += _flush(conn, pending, out, writer)
                pending = []
        rows += _flush(conn, pending, out, writer)
    return rows


def _flush(conn: Connection, rows: list[Any], out: IO[str], writer: Any) -> int:
    if writer is None:
        for row in rows:
            out.write(bytes(row.content).decode())
            out.write("\n")
        return len(rows)
    links = _patients(conn, [int(r.seq) for r in rows])
    for row in rows:
        patients = links.get(int(row.seq)) or ([row.patient_id] if row.patient_id else [])
        writer.writerow(
            (
                row.seq,
                row.event_id,
                format_recorded(int(row.recorded_us)),
                row.action,
                row.type,
                row.subtype or "",
                row.outcome,
                row.agent or "",
                " ".join(patients),
                row.entity or "",
                row.purpose or "",
                row.request_id or "",
                bytes(row.hash).hex(),
            )
        )
    return len(rows)
