"""HTTP API for CRMs (``/crm/v1``) and re-identification, plus the CRM bridge wiring.

Why: a CRM is a processor that may only see minimal, consented, pseudonymous
data (Decree 356/2025/ND-CP Art. 7; Law 91/2025 Art. 9/26/28).  A client of
role ``crm`` reaches only these routes (``ROLE_CHANNELS``), and only when its
client id is a CRM configured in the projection allowlist; everything it
receives is the sealed outbox (already filtered and projected).  Turning a
pseudonym back into a patient is reserved to role ``privacy_officer``, needs a
reason and is audited (ISO/IEC 27001:2022 A.8.11).  Every consent decision of
the bridge is written to the audit trail in the store transaction (IHE BALP
Export events, outcome 0 = permit, 4 = deny).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Connection, Engine

from audit.events import SUBTYPE_SYSTEM, Target, build_event
from audit.hooks import AuditHook
from common.errors import CarebridgeError, Forbidden, InvalidInput, NotFound
from consent.pdp import Decision
from consent.purposes import PURPOSE_SYSTEM, PURPOSES, build_consent
from crm_bridge.booking import HisAnswer
from crm_bridge.bridge import CrmBridge
from crm_bridge.config import EVENT_TYPES
from crm_bridge.delivery import read_feed
from crm_bridge.outbox import resolve_pseudonym
from fhir_store.instants import format_instant, now_us
from fhir_store.model import Create, RequestContext
from fhir_store.repository import FhirStore
from gateway.auth.scopes import require_channel
from gateway.auth.tokens import Principal
from gateway.http.openapi_docs import auth_errors
from gateway.mllp.client import MllpClient
from gateway.settings import Settings
from mappers.outbound_siu import appointment_to_siu_s12

_ = SUBTYPE_SYSTEM  # the subtype below is a carebridge code in that system


class AuditDecisionRecorder:
    """``consent.pdp.DecisionAuditor`` writing one AuditEvent per decision in the caller's transaction."""

    def __init__(self, audit: AuditHook) -> None:
        self.audit = audit

    def record_decisions(
        self, conn: Connection, batches: Sequence[tuple[Sequence[Decision], RequestContext]]
    ) -> None:
        recorded = now_us()
        events = []
        for decisions, context in batches:
            for d in decisions:
                targets = []
                if d.resource and "/" in d.resource:
                    kind, _, res_id = d.resource.partition("/")
                    targets.append(Target(kind, res_id))
                if d.consent_id:
                    targets.append(Target("Consent", d.consent_id))
                events.append(
                    build_event(
                        context=replace(context, purpose_of_use=f"{PURPOSE_SYSTEM}|{d.purpose}"),
                        event_type="110106",
                        subtype="consent-decision",
                        action="E",
                        outcome="0" if d.permit else "4",
                        outcome_desc=f"{'permit' if d.permit else 'deny'}: {d.reason}; recipient={d.recipient}",
                        targets=targets,
                        patient_ids=[d.patient_id],
                        recorded_us=recorded,
                    )
                )
        self.audit.writer.append(conn, events)


def mllp_transport(endpoint: tuple[str, int], message: bytes, timeout: float) -> HisAnswer | None:
    with MllpClient(endpoint[0], endpoint[1], timeout=timeout) as client:
        ack = client.exchange(message)
    return None if ack is None else HisAnswer(ack.code, ack.control_id, ack.text)


def build_crm_bridge(
    engine: Engine, store: FhirStore, settings: Settings, audit: AuditHook | None
) -> CrmBridge:
    """Called by ``Runtime.create``: hooks the bridge into the store."""
    _ = engine
    return CrmBridge.create(
        store.engine,
        store,
        settings.crm,
        auditor=AuditDecisionRecorder(audit) if audit is not None else None,
        transport=mllp_transport,
        build_siu=appointment_to_siu_s12,
    )


# -- authentication -------------------------------------------------------------------


def _principal(request: Request, channel: str) -> tuple[Principal, RequestContext]:
    runtime = request.app.state.runtime
    client = request.client
    address = client.host if client else None
    request_id = uuid.uuid4().hex
    try:
        header = request.headers.get("authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            from common.errors import Unauthenticated

            raise Unauthenticated("expected 'Authorization: Bearer <token>'", location="Authorization")
        principal: Principal = runtime.tokens.verify(token.strip())
        require_channel(principal.role, channel)
        if channel == "crm" and principal.client_id not in runtime.crm.config.clients:
            raise Forbidden("this CRM client has no projection configured", location="client_id")
    except CarebridgeError as exc:
        audit = runtime.audit
        if audit is not None:
            audit.record_denial(
                RequestContext(
                    request_id,
                    client_id="unauthenticated",
                    role="unknown",
                    channel="crm",
                    source_address=address,
                ),
                "crm-api",
                reason=exc.message,
            )
        raise
    context = RequestContext(
        request_id, client_id=principal.client_id, role=principal.role, channel="crm", source_address=address
    )
    return principal, context


def crm_caller(request: Request) -> tuple[Principal, RequestContext]:
    return _principal(request, "crm")


def officer_caller(request: Request) -> tuple[Principal, RequestContext]:
    return _principal(request, "reidentify")


def _bridge(request: Request) -> CrmBridge:
    bridge: CrmBridge = request.app.state.runtime.crm
    return bridge


router = APIRouter(prefix="/crm/v1", tags=["crm"], responses=auth_errors())


@router.get("/changes", summary="Ordered, resumable change feed (at-least-once; de-duplicate on event id)")
def changes(
    request: Request,
    cursor: int = Query(0, ge=0),
    limit: int = Query(100, ge=1, le=1000),
    caller: tuple[Principal, RequestContext] = Depends(crm_caller),
) -> dict[str, Any]:
    bridge = _bridge(request)
    events = read_feed(bridge.subscriptions.engine, bridge.keys, caller[0].client_id, cursor, limit)
    return {
        "events": [{**e.body, "seq": e.seq} for e in events],
        "next_cursor": events[-1].seq if events else cursor,
        "has_more": len(events) == limit,
    }


@router.post(
    "/subscriptions", status_code=201, summary="Register a webhook; the signing secret is shown once"
)
def subscribe(
    request: Request, body: dict[str, Any], caller: tuple[Principal, RequestContext] = Depends(crm_caller)
) -> dict[str, Any]:
    url = str(body.get("url") or "")
    if not url.startswith(("https://", "http://")):
        raise InvalidInput("url must be an http(s) URL", location="url")
    events = body.get("events") or None
    if events is not None and any(e not in EVENT_TYPES for e in events):
        raise InvalidInput(f"events must be among {list(EVENT_TYPES)}", location="events")
    from_cursor = body.get("from_cursor")
    return _bridge(request).subscriptions.create(
        caller[0].client_id, url, events, from_seq=int(from_cursor) if from_cursor is not None else None
    )


@router.get("/subscriptions", summary="This CRM's webhooks with cursor, retry state and dead letters")
def subscriptions(
    request: Request, caller: tuple[Principal, RequestContext] = Depends(crm_caller)
) -> dict[str, Any]:
    return {"subscriptions": _bridge(request).subscriptions.list(caller[0].client_id)}


@router.delete("/subscriptions/{sub_id}", status_code=204, summary="Stop a webhook")
def unsubscribe(
    request: Request, sub_id: str, caller: tuple[Principal, RequestContext] = Depends(crm_caller)
) -> None:
    if not _bridge(request).subscriptions.deactivate(caller[0].client_id, sub_id):
        raise NotFound("unknown subscription", location="id")


@router.post(
    "/subscriptions/{sub_id}/redeliver", summary="Re-deliver dead letters (optionally rewind the cursor)"
)
def redeliver(
    request: Request,
    sub_id: str,
    body: dict[str, Any] | None = None,
    caller: tuple[Principal, RequestContext] = Depends(crm_caller),
) -> dict[str, Any]:
    from_cursor = (body or {}).get("from_cursor")
    bridge = _bridge(request)
    count = bridge.subscriptions.redeliver(
        caller[0].client_id, sub_id, from_seq=int(from_cursor) if from_cursor is not None else None
    )
    if count < 0:
        raise NotFound("unknown subscription", location="id")
    bridge.dispatcher.wake.set()
    return {"requeued": count}


@router.post(
    "/appointments", status_code=202, summary="Book from the CRM: proposed now, booked when the HIS accepts"
)
def book(
    request: Request,
    body: dict[str, Any],
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
    caller: tuple[Principal, RequestContext] = Depends(crm_caller),
) -> dict[str, Any]:
    return _bridge(request).booking.request(caller[0].client_id, body, caller[1], idempotency_key)


@router.post(
    "/consents", status_code=201, summary="Record a patient's answer collected by the CRM (grant or withdraw)"
)
def record_consent(
    request: Request, body: dict[str, Any], caller: tuple[Principal, RequestContext] = Depends(crm_caller)
) -> dict[str, Any]:
    bridge = _bridge(request)
    purpose = str(body.get("purpose") or "")
    if purpose not in PURPOSES:
        raise InvalidInput(f"purpose must be one of {list(PURPOSES)}", location="purpose")
    with bridge.subscriptions.engine.connect() as conn:
        patient_id = resolve_pseudonym(conn, caller[0].client_id, str(body.get("subject") or ""))
    if patient_id is None:
        raise NotFound("unknown pseudonym for this CRM", location="subject")
    granted = bool(body.get("granted"))
    resource = build_consent(
        patient_id,
        purpose,
        permit=granted,
        date_time=str(body.get("date_time") or format_instant(now_us())),
        channel=str(body.get("channel") or "crm"),
        text_version=body.get("text_version"),
        text_shown=body.get("text"),
        recipient=caller[0].client_id,
    )
    runtime = request.app.state.runtime
    results = runtime.store.transact([Create(resource)], caller[1])
    stored = results[0].stored
    return {"consent_id": stored.id if stored else None, "purpose": purpose, "granted": granted}


reid_router = APIRouter(prefix="/crm/v1", tags=["privacy"], responses=auth_errors())


@reid_router.post("/reidentify", summary="Pseudonym → patient, for a privacy officer with a reason (audited)")
def reidentify(
    request: Request, body: dict[str, Any], caller: tuple[Principal, RequestContext] = Depends(officer_caller)
) -> JSONResponse:
    crm_id = str(body.get("crm") or "")
    pseudonym = str(body.get("pseudonym") or "")
    reason = str(body.get("reason") or "").strip()
    if len(reason) < 10:
        raise InvalidInput("a reason (at least 10 characters) is required", location="reason")
    runtime = request.app.state.runtime
    with runtime.engine.connect() as conn:
        patient_id = resolve_pseudonym(conn, crm_id, pseudonym)
    audit: AuditHook | None = runtime.audit
    if audit is not None:
        event = build_event(
            context=replace(
                caller[1], purpose_of_use="http://terminology.hl7.org/CodeSystem/v3-ActReason|HOPERAT"
            ),
            event_type="110106",
            subtype="re-identification",
            action="R",
            outcome="0" if patient_id else "4",
            outcome_desc=f"reason: {reason[:200]}; crm={crm_id}",
            targets=[Target("Patient", patient_id)] if patient_id else [],
            patient_ids=[patient_id] if patient_id else [],
            recorded_us=now_us(),
        )
        audit.append([event])
    if patient_id is None:
        raise NotFound("unknown pseudonym", location="pseudonym")
    return JSONResponse({"patient": f"Patient/{patient_id}", "crm": crm_id})


__all__ = ["AuditDecisionRecorder", "build_crm_bridge", "reid_router", "router"]
