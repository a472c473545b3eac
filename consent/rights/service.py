"""The request workflow: file, acknowledge, extend, process, close, processor receipts.

Why (Decree 356/2025/ND-CP Art. 5; Law 91/2025/QH15 Art. 14): every request
has clocks (acknowledge in 2 working days, complete within the period of its
type, one extension of at most 20 days with a reason), every step is audited
(ISO/IEC 27001:2022 A.8.15; Circular 13/2025/TT-BYT traceability) and the
request is mirrored as a FHIR Task.  Each step is one store transaction: the
Task version, the request row, the handler's effects and the audit events
commit together or not at all, so a refused step changes nothing.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from audit.events import Target
from common.errors import BusinessRuleViolation, InvalidInput, NotFound, VersionConflict
from consent.rights import model as m
from consent.rights.access import handle_access
from consent.rights.calendar import WorkingCalendar, end_of_day_us, iso, local_date
from consent.rights.deps import RightsDeps
from consent.rights.erasure import handle_erasure
from consent.rights.others import handle_objection, handle_rectification, handle_restriction
from consent.rights.outcome import Outcome
from consent.rights.schema import privacy_receipt, privacy_request
from fhir_store.model import Create, Operation, RequestContext, Update
from fhir_store.writer import load_current

Handler = Callable[[RightsDeps, m.PrivacyRequest, RequestContext, dict[str, Any]], Outcome]
HANDLERS: dict[str, Handler] = {
    m.ERASURE: handle_erasure,
    m.ACCESS: handle_access,
    m.RECTIFICATION: handle_rectification,
    m.RESTRICTION: handle_restriction,
    m.OBJECTION: handle_objection,
}
MIN_REASON = 5


def internal(context: RequestContext) -> RequestContext:
    """The caller's identity for store writes made by the workflow (not a FHIR REST write)."""
    return replace(context, channel="internal", patient_ids=(), grants=())


def _has_crm_link(conn: Connection, patient_id: str) -> bool:
    from crm_bridge.schema import crm_pseudonym  # the bridge's link table (issue #5)

    row = conn.execute(select(crm_pseudonym.c.crm_id).where(crm_pseudonym.c.patient_id == patient_id)).first()
    return row is not None


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
        return m.PrivacyRequest.from_row(row)

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
            found = [m.PrivacyRequest.from_row(r) for r in conn.execute(stmt).all()]
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

    # -- filing ---------------------------------------------------------------------

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
        if request_type not in m.REQUEST_TYPES:
            raise InvalidInput(
                f"unknown request type {request_type!r}; expected one of {list(m.REQUEST_TYPES)}",
                location="type",
            )
        if len(reason.strip()) < MIN_REASON:
            raise InvalidInput("a reason is required", location="reason")
        engine = self.deps.store.engine
        with engine.connect() as conn:
            patient = load_current(conn, "Patient", patient_id, self.deps.store.cipher)
            if patient is None or patient.deleted:
                raise NotFound("the patient is not known", location="patient")
            processor = request_type == m.ERASURE and _has_crm_link(conn, patient_id)
            self._refuse_duplicate(conn, patient_id, request_type)
        now = self.now()
        req = m.PrivacyRequest(
            id=str(uuid.uuid4()),
            patient_id=patient_id,
            type=request_type,
            status=m.RECEIVED,
            scope=scope,
            reason=reason.strip(),
            filed_by=context.client_id,
            filed_role=context.role,
            verification=verification,
            processor_involved=processor,
            created_us=now,
            ack_due_us=self.calendar.working_days_due(now, m.ACK_WORKING_DAYS),
            due_us=m.due_us(self.calendar, request_type, now, processor),
            acknowledged_us=None,
            extended_us=None,
            extension_days=None,
            extension_reason=None,
            completed_us=None,
            closed_us=None,
            close_reason=None,
            task_id=None,
            response=None,
            updated_us=now,
        )

        def write(conn: Connection, results: list[Any]) -> None:
            task_id = results[0].stored.id
            values = {k: v for k, v in req.__dict__.items() if k not in ("scope", "response", "task_id")}
            conn.execute(
                insert(privacy_request).values(
                    **values,
                    scope=orjson.dumps(scope).decode(),
                    response=None,
                    task_id=task_id,
                    open_key=f"{patient_id}|{request_type}",
                )
            )
            self.deps.audit_in(
                conn,
                context,
                "filed",
                patient_id=patient_id,
                request_id=req.id,
                action="C",
                detail=f"type={request_type}; role={context.role}",
                targets=[Target("Task", task_id)],
            )

        try:
            self.deps.store.transact([Create(m.task_resource(req))], internal(context), extra=write)
        except IntegrityError:
            with engine.connect() as conn:
                self._refuse_duplicate(conn, patient_id, request_type)
            raise
        return self.get(req.id)

    def _refuse_duplicate(self, conn: Connection, patient_id: str, request_type: str) -> None:
        row = conn.execute(
            select(privacy_request.c.id).where(privacy_request.c.open_key == f"{patient_id}|{request_type}")
        ).first()
        if row is not None:
            raise VersionConflict(
                f"an open {request_type} request already exists for this patient ({row[0]}); "
                "follow it instead of filing a new one",
                location="type",
            )

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
        also: Callable[[Connection], None] | None = None,
        detail: str | None = None,
    ) -> m.PrivacyRequest:
        """Write ``new`` (Task + row) if the row still is ``req`` (optimistic), plus effects, audited."""

        def write(conn: Connection, _results: list[Any]) -> None:
            values = {
                "status": new.status,
                "acknowledged_us": new.acknowledged_us,
                "due_us": new.due_us,
                "extended_us": new.extended_us,
                "extension_days": new.extension_days,
                "extension_reason": new.extension_reason,
                "completed_us": new.completed_us,
                "closed_us": new.closed_us,
                "close_reason": new.close_reason,
                "response": orjson.dumps(new.response).decode() if new.response is not None else None,
                "updated_us": new.updated_us,
                "open_key": f"{new.patient_id}|{new.type}" if new.is_open else None,
            }
            result = conn.execute(
                update(privacy_request)
                .where(privacy_request.c.id == req.id, privacy_request.c.updated_us == req.updated_us)
                .values(**values)
            )
            if result.rowcount != 1:
                raise VersionConflict("the request changed meanwhile; reload it and retry", location="id")
            if also is not None:
                also(conn)
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
        self.deps.store.transact([*task_ops, *(ops or [])], internal(context), extra=write)
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

    def extend(self, context: RequestContext, request_id: str, days: int, reason: str) -> m.PrivacyRequest:
        req = self._open(request_id)
        if req.extended_us is not None:
            raise BusinessRuleViolation(
                "the deadline was already extended once (Decree 356/2025 Art. 5 allows one extension)",
                location="days",
            )
        if not 1 <= days <= m.MAX_EXTENSION_DAYS:
            raise InvalidInput(f"days must be between 1 and {m.MAX_EXTENSION_DAYS}", location="days")
        if len(reason.strip()) < MIN_REASON:
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
        if len(reason.strip()) < MIN_REASON:
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

        def confirm(conn: Connection) -> None:
            conn.execute(
                update(privacy_receipt)
                .where(privacy_receipt.c.request_id == req.id, privacy_receipt.c.crm_id == crm_id)
                .values(confirmed_us=now, note=(note or "")[:200] or None)
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
