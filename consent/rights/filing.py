"""Filing a privacy request: checks, deadlines, the request row and its FHIR Task in one transaction.

Why a step of its own: filing is where the clocks start (Decree 356/2025/ND-CP
Art. 5: acknowledge within 2 working days, complete within the period of the
request's type, longer when a processor must act: ``consent.rights.deadlines``), so everything
that decides them — the request type, whether a CRM holds the patient — is
fixed here, once.  Only one open request per patient and type is allowed
(``open_key`` is unique), so a patient who files twice is pointed to the
request already running instead of starting a second clock.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from sqlalchemy import Connection, insert, select
from sqlalchemy.exc import IntegrityError

from audit import Target
from common import InvalidInput, NotFound, VersionConflict
from consent.rights import deadlines as d
from consent.rights import model as m
from consent.rights.deps import RightsDeps, internal_context
from consent.rights.schema import privacy_request
from fhir_store import Create, RequestContext, load_current


def file_request(
    deps: RightsDeps,
    context: RequestContext,
    *,
    patient_id: str,
    request_type: str,
    scope: dict[str, Any],
    reason: str,
    verification: str | None,
) -> str:
    """File a request for ``patient_id``; returns its id.  Refuses unknown types, empty reasons,
    unknown patients and a second open request of the same type (409)."""
    if request_type not in m.REQUEST_TYPES:
        raise InvalidInput(
            f"unknown request type {request_type!r}; expected one of {list(m.REQUEST_TYPES)}",
            location="type",
        )
    if len(reason.strip()) < m.MIN_REASON_CHARS:
        raise InvalidInput("a reason is required", location="reason")
    engine = deps.store.engine
    with engine.connect() as conn:
        patient = load_current(conn, "Patient", patient_id, deps.store.cipher)
        if patient is None or patient.deleted:
            raise NotFound("the patient is not known", location="patient")
        processor = (
            d.counts_processor(request_type)
            and deps.processors is not None
            and bool(deps.processors.linked(conn, patient_id))
        )
        _refuse_duplicate(conn, patient_id, request_type)
    now = deps.clock.now_us()
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
        ack_due_us=deps.calendar.working_days_due(now, m.ACK_WORKING_DAYS),
        due_us=m.due_us(deps.calendar, request_type, now, processor),
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
        values.update(
            req.sealed_values(
                deps.store.cipher,
                scope=orjson.dumps(scope).decode(),
                reason=req.reason,
                verification=req.verification,
            )
        )
        conn.execute(
            insert(privacy_request).values(
                **values,
                response=None,
                task_id=task_id,
                open_key=f"{patient_id}|{request_type}",
            )
        )
        deps.audit_in(
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
        deps.store.transact([Create(m.task_resource(req))], internal_context(context), extra=write)
    except IntegrityError:
        with engine.connect() as conn:
            _refuse_duplicate(conn, patient_id, request_type)
        raise
    return req.id


def _refuse_duplicate(conn: Connection, patient_id: str, request_type: str) -> None:
    row = conn.execute(
        select(privacy_request.c.id).where(privacy_request.c.open_key == f"{patient_id}|{request_type}")
    ).first()
    if row is not None:
        raise VersionConflict(
            f"an open {request_type} request already exists for this patient ({row[0]}); "
            "follow it instead of filing a new one",
            location="type",
        )
