"""The request workflow: file, acknowledge, extend, process, close, processor receipts.

Why (Decree 356/2025/ND-CP Art. 5; Law 91/2025/QH15 Art. 14): every request
has clocks (acknowledge in 2 working days, complete within the period of its
type, one extension with a reason: the table is ``consent.rights.deadlines``), every step is audited
(ISO/IEC 27001:2022 A.8.15; Circular 13/2025/TT-BYT traceability) and the
request is mirrored as a FHIR Task.  Each step is one store transaction: the
Task version, the request row, the handler's effects and the audit events
commit together or not at all, so a refused step changes nothing.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, select, update

from audit import Target
from common import BusinessRuleViolation, InvalidInput, NotFound, VersionConflict
from consent.rights import model as m
from consent.rights.access import handle_access
from consent.rights.calendar import WorkingCalendar, end_of_day_us, iso, local_date
from consent.rights.deadlines import CLOCKS, max_extension
from consent.rights.deps import RightsDeps, internal_context
from consent.rights.erasure import handle_erasure
from consent.rights.filing import file_request
from consent.rights.others import (
    handle_objection,
    handle_rectification,
    handle_restriction,
    handle_withdrawal,
)
from consent.rights.outcome import InTransaction, Outcome
from consent.rights.schema import SEALED, privacy_receipt, privacy_request
from fhir_store import Operation, OperationResult, RequestContext, Update

Handler = Callable[[RightsDeps, m.PrivacyRequest, RequestContext, dict[str, Any]], Outcome]
#: One INFO line per filed request (issue #19 item 3): id, type, state, due date; never patient data.
log = logging.getLogger("carebridge.privacy")
HANDLERS: dict[str, Handler] = {
    m.ERASURE: handle_erasure,
    m.ACCESS: handle_access,
    m.RECTIFICATION: handle_rectification,
    m.RESTRICTION: handle_restriction,
    m.OBJECTION: handle_objection,
    m.WITHDRAWAL: handle_withdrawal,
}


class RightsService:
    def __init__(self, deps: RightsDeps) -> None:
        self.deps = deps

    @property
    def calendar(self) -> WorkingCalendar:
        return self.deps.calendar

    def now(self) -> int:
        return self.deps.clock.now_us()

    # -- reads ---------------------------------------------------------------------

    def get(self, request_id: str) -> m.PrivacyRequest:
        with self.deps.store.engine.connect() as conn:
            row = conn.execute(select(privacy_request).where(privacy_request.c.id == request_id)).first()
        if row is None:
            raise NotFound("unknown privacy request", location="id")
        return m.PrivacyRequest.from_row(row, self.deps.store.cipher)

    def find(
        self,
        *,
        patient_id: str | None = None,
        status: str | None = None,
        states: frozenset[str] | None = None,
    ) -> list[m.PrivacyRequest]:
        stmt = select(privacy_request).order_by(privacy_request.c.created_us)
        if patient_id is not None:
            stmt = stmt.where(privacy_request.c.patient_id == patient_id)
        if status is not None:
            stmt = stmt.where(privacy_request.c.status == status)
        if states is not None:
            stmt = stmt.where(privacy_request.c.status.in_(sorted(m.OPEN_STATUSES)))
        with self.deps.store.engine.connect() as conn:
            found = [m.PrivacyRequest.from_row(r, self.deps.store.cipher) for r in conn.execute(stmt).all()]
        if states is None:
            return found
        now = self.now()
        return [r for r in found if r.clock_state(self.calendar, now)[0] in states]

    def receipts(self, request_id: str) -> list[dict[str, Any]]:
        with self.deps.store.engine.connect() as conn:
            rows = conn.execute(
                select(privacy_receipt).where(privacy_receipt.c.request_id == request_id)
            ).all()
        return [
            {
                "crm": r.crm_id,
                "notified_at": iso(r.notified_us),
                "confirmed_at": iso(r.confirmed_us),
            }
            for r in rows
        ]

    # -- filing (consent.rights.filing) ----------------------------------------------

    def file(
        self,
        context: RequestContext,
        *,
        patient_id: str,
        request_type: str,
        scope: dict[str, Any],
        reason: str,
        verification: str | None,
    ) -> m.PrivacyRequest:
        request_id = file_request(
            self.deps,
            context,
            patient_id=patient_id,
            request_type=request_type,
            scope=scope,
            reason=reason,
            verification=verification,
        )
        filed = self.get(request_id)
        log.info(
            "privacy request filed: id=%s type=%s state=%s acknowledge_by=%s due=%s",
            filed.id,
            filed.type,
            filed.status,
            iso(filed.ack_due_us),
            iso(filed.due_us),
        )
        return filed

    # -- steps ---------------------------------------------------------------------

    def _step(
        self,
        context: RequestContext,
        req: m.PrivacyRequest,
        new: m.PrivacyRequest,
        step: str,
        *,
        ops: list[Operation] | None = None,
        business_status: str | None = None,
        also: InTransaction | None = None,
        detail: str | None = None,
    ) -> m.PrivacyRequest:
        """Write ``new`` (Task + row) if the row still is ``req`` (optimistic), plus effects, audited."""

        def write(conn: Connection, results: list[OperationResult]) -> None:
            values = {
                "status": new.status,
                "acknowledged_us": new.acknowledged_us,
                "due_us": new.due_us,
                "extended_us": new.extended_us,
                "extension_days": new.extension_days,
                "completed_us": new.completed_us,
                "closed_us": new.closed_us,
                "updated_us": new.updated_us,
                "open_key": f"{new.patient_id}|{new.type}" if new.is_open else None,
            }
            changed = {  # re-sealed only when they changed (each seal is a fresh nonce)
                column: text
                for column, text, before in (
                    ("extension_reason", new.extension_reason, req.extension_reason),
                    ("close_reason", new.close_reason, req.close_reason),
                    ("response", _json(new.response), _json(req.response)),
                )
                if text != before
            }
            values.update(new.sealed_values(self.deps.store.cipher, **changed))
            result = conn.execute(
                update(privacy_request)
                .where(privacy_request.c.id == req.id, privacy_request.c.updated_us == req.updated_us)
                .values(**values)
            )
            if result.rowcount != 1:
                raise VersionConflict("the request changed meanwhile; reload it and retry", location="id")
            if also is not None:
                also(conn, results[len(task_ops) :])  # the results of ``ops``
            self.deps.audit_in(
                conn,
                context,
                step,
                patient_id=req.patient_id,
                request_id=req.id,
                detail=detail,
                targets=[Target("Task", req.task_id)] if req.task_id else [],
            )

        task_ops: list[Operation] = []
        if req.task_id:
            task_ops.append(Update("Task", req.task_id, m.task_resource(new, business_status)))
        self.deps.store.transact([*task_ops, *(ops or [])], internal_context(context), extra=write)
        return self.get(req.id)

    def _open(self, request_id: str) -> m.PrivacyRequest:
        req = self.get(request_id)
        if not req.is_open:
            raise BusinessRuleViolation(f"the request is already {req.status}", location="status")
        return req

    def acknowledge(self, context: RequestContext, request_id: str) -> m.PrivacyRequest:
        req = self._open(request_id)
        if req.acknowledged_us is not None:
            raise BusinessRuleViolation("the request was already acknowledged", location="status")
        now = self.now()
        new = replace(
            req, status=m.ACKNOWLEDGED, acknowledged_us=now, updated_us=max(now, req.updated_us + 1)
        )
        late = "late" if now > req.ack_due_us else "on time"
        return self._step(context, req, new, "acknowledged", detail=late)

    def extend(
        self, context: RequestContext, request_id: str, days: int | None, reason: str
    ) -> m.PrivacyRequest:
        """Extend once; ``days`` None takes the longest extension the type allows."""
        req = self._open(request_id)
        days = max_extension(req.type) if days is None else days
        if req.extended_us is not None:
            raise BusinessRuleViolation(
                "the deadline was already extended once (Decree 356/2025 Art. 5 allows one extension)",
                location="days",
            )
        longest = max_extension(req.type)
        if not 1 <= days <= longest:
            raise InvalidInput(
                f"days must be between 1 and {longest} for a {req.type} request ({CLOCKS[req.type].basis})",
                location="days",
            )
        if len(reason.strip()) < m.MIN_REASON_CHARS:
            raise InvalidInput("an extension needs a reason", location="reason")
        now = self.now()
        new = replace(
            req,
            due_us=end_of_day_us(local_date(req.due_us) + timedelta(days=days)),
            extended_us=now,
            extension_days=days,
            extension_reason=reason.strip(),
            updated_us=max(now, req.updated_us + 1),
        )
        return self._step(context, req, new, "extended", detail=f"days={days}")

    def process(self, context: RequestContext, request_id: str, body: dict[str, Any]) -> m.PrivacyRequest:
        req = self._open(request_id)
        if req.status == m.IN_PROGRESS:
            raise BusinessRuleViolation("the request is already being processed", location="status")
        outcome = HANDLERS[req.type](self.deps, req, context, body)
        now = self.now()
        new = replace(
            req,
            status=outcome.status,
            acknowledged_us=req.acknowledged_us or now,
            completed_us=now if outcome.status == m.COMPLETED else None,
            response=outcome.document,
            updated_us=max(now, req.updated_us + 1),
        )
        done = self._step(
            context,
            req,
            new,
            f"processed-{req.type}",
            ops=outcome.ops,
            business_status=outcome.business_status,
            also=outcome.in_transaction,
            detail=f"status={outcome.status}",
        )
        if outcome.after_commit is not None:
            outcome.after_commit()
        return done

    def close(
        self, context: RequestContext, request_id: str, reason: str, rejected: bool
    ) -> m.PrivacyRequest:
        req = self.get(request_id)
        if req.status in (m.CLOSED, m.REJECTED):
            raise BusinessRuleViolation(f"the request is already {req.status}", location="status")
        if len(reason.strip()) < m.MIN_REASON_CHARS:
            raise InvalidInput("closing needs a reason", location="reason")
        if req.status == m.IN_PROGRESS and not rejected:
            raise BusinessRuleViolation(
                "the erasure is waiting for processor deletion receipts", location="status"
            )
        if req.is_open and not rejected:
            raise BusinessRuleViolation("process the request before closing it", location="status")
        now = self.now()
        new = replace(
            req,
            status=m.REJECTED if rejected else m.CLOSED,
            closed_us=now,
            close_reason=reason.strip(),
            updated_us=max(now, req.updated_us + 1),
        )
        return self._step(context, req, new, "rejected" if rejected else "closed")

    # -- processor receipts (Law 91/2025 Art. 14) -----------------------------------

    def confirm_receipt(
        self, context: RequestContext, crm_id: str, pseudonym: str, note: str | None
    ) -> m.PrivacyRequest:
        digest = hashlib.sha256(pseudonym.encode()).hexdigest()
        with self.deps.store.engine.connect() as conn:
            row = conn.execute(
                select(privacy_receipt.c.request_id, privacy_receipt.c.confirmed_us).where(
                    privacy_receipt.c.crm_id == crm_id, privacy_receipt.c.pseudonym_hash == digest
                )
            ).first()
        if row is None:
            raise NotFound("no erasure is waiting for this CRM and subject", location="subject")
        req = self.get(str(row[0]))
        if row[1] is not None:
            return req
        now = self.now()
        with self.deps.store.engine.connect() as conn:
            pending = conn.execute(
                select(privacy_receipt.c.crm_id).where(
                    privacy_receipt.c.request_id == req.id,
                    privacy_receipt.c.confirmed_us.is_(None),
                    privacy_receipt.c.crm_id != crm_id,
                )
            ).all()
        finished = not pending and req.status == m.IN_PROGRESS
        document = dict(req.response or {})
        if finished:
            document["completed_at"] = iso(now)
        new = replace(
            req,
            status=m.COMPLETED if finished else req.status,
            completed_us=now if finished else req.completed_us,
            response=document,
            updated_us=max(now, req.updated_us + 1),
        )

        sealed_note = SEALED["privacy_receipt"]["note"].seal(
            self.deps.store.cipher, (req.id, crm_id), (note or "")[:200] or None
        )

        def confirm(conn: Connection, _results: Sequence[OperationResult]) -> None:
            conn.execute(
                update(privacy_receipt)
                .where(privacy_receipt.c.request_id == req.id, privacy_receipt.c.crm_id == crm_id)
                .values(confirmed_us=now, note=sealed_note)
            )

        return self._step(
            context,
            req,
            new,
            "processor-receipt",
            also=confirm,
            business_status=None if finished else "awaiting-processor-receipts",
            detail=f"crm={crm_id}",
        )


def _json(document: dict[str, Any] | None) -> str | None:
    return None if document is None else orjson.dumps(document).decode()
