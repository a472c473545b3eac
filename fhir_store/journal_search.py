"""Searching the HL7 journal by what an integration engineer knows (the console's message browser).

Why here and not in a route: the journal's layout is the store's (``fhir_store.journal``),
and the browser, its reprocess-all-results action and the error summary must read
the same rows the same way.  Only metadata is returned (sender, type, status,
control id, times, ACK code, error text): the sealed ``raw`` column is opened by
:func:`fhir_store.journal.load` alone, for the roles allowed to see it.

A patient filter (record number or CCCD) never touches clear identifiers: the
value is blinded with the store's key (:mod:`fhir_store.blind_index`) and matched
against the Patient ``identifier`` index (:func:`patients_by_identifier`); the
journal rows that wrote those patients are found by the caller through the audit
trail (request id ``hl7-<journal id>``) and passed here as ``ids``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Connection, Select, and_, func, select

from fhir_store.content_cipher import StoreCipher
from fhir_store.schema import hl7_journal, search_token

_j = hl7_journal
#: largest page the browser asks for
MAX_PAGE = 200
#: most journal rows one "reprocess every result" may touch
MAX_BULK = 500


@dataclass(frozen=True, slots=True)
class JournalQuery:
    """The browser's filters, all optional and AND-ed (``sender`` is MSH-3 or ``MSH-3^MSH-4``)."""

    sender: str = ""
    message_type: str = ""  # "ADT" or "ADT^A04"
    status: str = ""
    control_id: str = ""
    since_us: int | None = None  # inclusive
    until_us: int | None = None  # exclusive
    ids: Collection[int] | None = None  # e.g. the messages that wrote a patient; empty: none match


@dataclass(frozen=True, slots=True)
class JournalSummary:
    """One journal row without its message bytes."""

    id: int
    received_us: int
    peer: str
    sending_application: str
    sending_facility: str
    control_id: str
    message_type: str
    status: str
    ack_code: str | None
    error: str | None
    processed_us: int | None
    attempts: int

    @property
    def sender(self) -> str:
        return f"{self.sending_application}^{self.sending_facility}"


_SUMMARY = (
    _j.c.id,
    _j.c.received_us,
    _j.c.peer,
    _j.c.sending_application,
    _j.c.sending_facility,
    _j.c.control_id,
    _j.c.message_type,
    _j.c.status,
    _j.c.ack_code,
    _j.c.error,
    _j.c.processed_us,
    _j.c.attempts,
)


def _summary(row: Any) -> JournalSummary:
    return JournalSummary(*row)


def _conditions(query: JournalQuery) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    sender = query.sender.strip()
    if sender:
        app, _, fac = sender.partition("^")
        where.append(_j.c.sending_application == app.strip())
        if fac.strip():
            where.append(_j.c.sending_facility == fac.strip())
    kind = query.message_type.strip().upper()
    if kind:
        where.append(_j.c.message_type == kind if "^" in kind else _j.c.message_type.startswith(kind + "^"))
    if query.status.strip():
        where.append(_j.c.status == query.status.strip())
    if query.control_id.strip():
        where.append(_j.c.control_id == query.control_id.strip())
    if query.since_us is not None:
        where.append(_j.c.received_us >= query.since_us)
    if query.until_us is not None:
        where.append(_j.c.received_us < query.until_us)
    if query.ids is not None:
        where.append(_j.c.id.in_(sorted(query.ids)) if query.ids else _j.c.id < 0)
    return where


def _filtered(stmt: Select[Any], query: JournalQuery) -> Select[Any]:
    conditions = _conditions(query)
    return stmt.where(and_(*conditions)) if conditions else stmt


def search_journal(
    conn: Connection, query: JournalQuery, *, limit: int = 50, offset: int = 0
) -> tuple[list[JournalSummary], int]:
    """One page of matching rows, newest first, and how many match in all."""
    limit = max(1, min(limit, MAX_PAGE))
    stmt = select(*_SUMMARY)
    conditions = _conditions(query)
    if conditions:
        stmt = stmt.where(and_(*conditions))
    rows = conn.execute(stmt.order_by(_j.c.id.desc()).limit(limit).offset(max(0, offset))).all()
    counted: Select[Any] = select(func.count()).select_from(_j)
    total = conn.execute(_filtered(counted, query)).scalar_one()
    return [_summary(row) for row in rows], int(total)


def journal_ids_matching(conn: Connection, query: JournalQuery, *, limit: int = MAX_BULK) -> list[int]:
    """Ids of every matching row, oldest first (the order a bulk reprocess applies them), at most ``limit``."""
    ids: Select[Any] = select(_j.c.id)
    stmt = _filtered(ids, query).order_by(_j.c.id).limit(limit)
    return [int(row[0]) for row in conn.execute(stmt)]


def journal_summary(conn: Connection, journal_id: int) -> JournalSummary | None:
    row = conn.execute(select(*_SUMMARY).where(_j.c.id == journal_id)).first()
    return None if row is None else _summary(row)


def journal_error_groups(conn: Connection, query: JournalQuery) -> list[tuple[str, str, int]]:
    """``(error text, ACK code, rows)`` of the matching rows, commonest first (the errors view).

    The error text is what the ACK's ERR said (field location and HL7 table 0357
    wording, never the field's value), so grouping by it groups by cause.
    """
    stmt = select(_j.c.error, _j.c.ack_code, func.count()).select_from(_j)
    conditions = _conditions(query)
    if conditions:
        stmt = stmt.where(and_(*conditions))
    rows = conn.execute(stmt.group_by(_j.c.error, _j.c.ack_code).order_by(func.count().desc())).all()
    return [(str(r[0] or ""), str(r[1] or ""), int(r[2])) for r in rows]


def patients_by_identifier(conn: Connection, cipher: StoreCipher, value: str) -> list[str]:
    """Ids of the Patients with an identifier (any system: record number, CCCD, BHYT) equal to ``value``.

    Blinded like every identifier lookup (:mod:`fhir_store.blind_index`): the
    value is never compared or stored in clear.
    """
    value = value.strip()
    if not value:
        return []
    t = search_token.c
    rows = conn.execute(
        select(t.res_id)
        .where(t.res_type == "Patient", t.param == "identifier", t.code == cipher.blind(value))
        .distinct()
    )
    return sorted(str(row[0]) for row in rows)
