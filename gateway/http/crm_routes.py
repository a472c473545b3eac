"""HTTP API for CRMs (``/crm/v1``) and the re-identification of CRM pseudonyms.

Why: a CRM is a processor that may only see minimal, consented, pseudonymous
data (Decree 356/2025/ND-CP Art. 7; Law 91/2025 Art. 9/26/28).  A client of
role ``crm`` reaches only these routes, and only when its client id is a CRM
configured in the projection allowlist (``gateway.http.principal.CRM``);
everything it receives is the sealed outbox (already filtered and projected).
Turning a pseudonym back into a patient is reserved to role
``privacy_officer``, needs a reason and is audited (ISO/IEC 27001:2022 A.8.11).
The bridge itself is wired in :mod:`gateway.crm_wiring`.

Registering and stopping a webhook are audited (BALP RESTful create/delete on
``Subscription/<id>``, refusals included): a webhook decides where patient
events go, so who pointed them where must be on record (ISO/IEC 27001:2022
A.8.15); so is a redelivery (``update``: it rewinds where the webhook reads).  Every
``POST /consents`` leaves exactly one event with its outcome: an accepted answer is
the store's ``create`` of the Consent, a refused one a failed ``create`` written by
:func:`_audited_consent_call` (Law 91/2025/QH15 Art. 9: consent must be provable,
and so must an attempt to record one).  Where a webhook may point is the bridge's rule
(``crm_bridge.webhook_policy``); a refused URL is a 400 naming ``url``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse

from audit import AuditHook, Target, build_event, outcome_for_status, rest_event
from common import CarebridgeError, Forbidden, InvalidInput, NotFound
from consent import CHANNELS, PURPOSES, build_consent
from crm_bridge import EVENT_TYPES, CrmBridge, ensure_registered, read_feed, resolve_pseudonym
from fhir_store import Create, RequestContext, format_instant, now_us
from gateway.http.errors import AUDITED_STATE
from gateway.http.openapi_docs import auth_errors, not_found
from gateway.http.principal import CrmCaller, OfficerCaller
from gateway.http.responses import runtime_of


def _bridge(request: Request) -> CrmBridge:
    return runtime_of(request).crm


router = APIRouter(prefix="/crm/v1", tags=["crm"], responses={**auth_errors(), **not_found()})
#: Feed positions are signed 64-bit sequence numbers: a bigger cursor is a 400, not a driver OverflowError.
MAX_CURSOR = 2**63 - 1


def _from_cursor(value: Any) -> int | None:
    """``from_cursor`` of a subscription body: absent, or a feed position (400 otherwise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise InvalidInput("from_cursor must be an integer", location="from_cursor")
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput("from_cursor must be an integer", location="from_cursor") from None
    if not 0 <= number <= MAX_CURSOR:
        raise InvalidInput(f"from_cursor must be from 0 to {MAX_CURSOR}", location="from_cursor")
    return number


@router.get("/changes", summary="Ordered, resumable change feed (at-least-once; de-duplicate on event id)")
def changes(
    request: Request,
    caller: CrmCaller,
    cursor: int = Query(0, ge=0, le=MAX_CURSOR),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """One page, after the CRM's feed start (its registration, ``crm_bridge.feed_start``).

    Every page is a disclosure: one AuditEvent (DICOM 110106 Export, subtype
    ``crm-feed-read``) names the CRM, the cursor range, the event count and
    the patients whose events left (IHE BALP; ISO/IEC 27001:2022 A.8.15).
    """
    bridge = _bridge(request)
    crm_id = caller.principal.client_id
    ensure_registered(bridge.subscriptions.engine, crm_id)
    events = read_feed(bridge.subscriptions.engine, bridge.keys, crm_id, cursor, limit)
    next_cursor = events[-1].seq if events else cursor
    audit: AuditHook | None = runtime_of(request).audit
    if audit is not None:
        patients = sorted({e.patient_id for e in events if e.patient_id})
        audit.append(
            [
                build_event(
                    context=caller.context,
                    event_type="110106",
                    subtype="crm-feed-read",
                    action="R",
                    outcome_desc=f"crm={crm_id}; cursor {cursor}..{next_cursor}; events {len(events)}",
                    patient_ids=patients,
                    recorded_us=now_us(),
                )
            ]
        )
    return {
        "events": [{**e.body, "seq": e.seq} for e in events],
        "next_cursor": next_cursor,
        "has_more": len(events) == limit,
    }


@router.post(
    "/subscriptions", status_code=201, summary="Register a webhook; the signing secret is shown once"
)
def subscribe(request: Request, body: dict[str, Any], caller: CrmCaller) -> dict[str, Any]:
    url = str(body.get("url") or "")
    events = body.get("events") or None
    if events is not None and any(e not in EVENT_TYPES for e in events):
        raise InvalidInput(f"events must be among {list(EVENT_TYPES)}", location="events")
    ensure_registered(_bridge(request).subscriptions.engine, caller.principal.client_id)
    try:
        created = _bridge(request).subscriptions.create(
            caller.principal.client_id, url, events, from_seq=_from_cursor(body.get("from_cursor"))
        )
    except CarebridgeError as exc:
        _audit(request, caller.context, "create", None, exc.http_status, f"refused: {exc.message}")
        raise
    _audit(request, caller.context, "create", str(created["id"]), 201, None)
    return created


@router.get("/subscriptions", summary="This CRM's webhooks with cursor, retry state and dead letters")
def subscriptions(request: Request, caller: CrmCaller) -> dict[str, Any]:
    return {"subscriptions": _bridge(request).subscriptions.list(caller.principal.client_id)}


@router.delete("/subscriptions/{sub_id}", status_code=204, summary="Stop a webhook")
def unsubscribe(request: Request, sub_id: str, caller: CrmCaller) -> None:
    found = _bridge(request).subscriptions.deactivate(caller.principal.client_id, sub_id)
    _audit(request, caller.context, "delete", sub_id, 204 if found else 404, None)
    if not found:
        raise NotFound("unknown subscription", location="id")


def _audit(
    request: Request,
    context: RequestContext,
    interaction: str,
    sub_id: str | None,
    status: int,
    description: str | None,
) -> None:
    """One RESTful event on ``Subscription/<id>`` (no patient: a webhook is the CRM's own setting)."""
    audit: AuditHook | None = runtime_of(request).audit
    if audit is None:
        return
    event = rest_event(
        context,
        interaction,
        recorded_us=now_us(),
        targets=[Target("Subscription", sub_id)] if sub_id else [],
        outcome=outcome_for_status(status),
        outcome_desc=description or (f"HTTP {status}" if status >= 400 else None),
    )
    audit.append([event])


@router.post(
    "/subscriptions/{sub_id}/redeliver", summary="Re-deliver dead letters (optionally rewind the cursor)"
)
def redeliver(
    request: Request,
    sub_id: str,
    caller: CrmCaller,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    bridge = _bridge(request)
    count = bridge.subscriptions.redeliver(
        caller.principal.client_id, sub_id, from_seq=_from_cursor((body or {}).get("from_cursor"))
    )
    _audit(request, caller.context, "update", sub_id, 200 if count >= 0 else 404, None)
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
    caller: CrmCaller,
    idempotency_key: str | None = Header(None, alias="Idempotency-Key"),
) -> dict[str, Any]:
    return _bridge(request).booking.request(caller.principal.client_id, body, caller.context, idempotency_key)


def _audited_consent_call(route: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """A refused consent call is recorded as one failed ``create`` (see module docstring)."""

    @functools.wraps(route)
    def wrapper(request: Request, body: dict[str, Any], caller: Any) -> dict[str, Any]:
        try:
            return route(request, body, caller)
        except CarebridgeError as exc:
            audit: AuditHook | None = runtime_of(request).audit
            if audit is not None:
                event = rest_event(
                    caller.context,
                    "create",
                    recorded_us=now_us(),
                    outcome=outcome_for_status(exc.http_status),
                    outcome_desc=f"crm consent refused (HTTP {exc.http_status}): {exc.message}"[:300],
                )
                audit.append([event])
            raise

    return wrapper


@router.post(
    "/consents",
    status_code=201,
    summary="Record a withdrawal or opt-out the patient told the CRM (no grants)",
)
@_audited_consent_call
def record_consent(request: Request, body: dict[str, Any], caller: CrmCaller) -> dict[str, Any]:
    """A CRM records withdrawals and opt-outs only, effective at once (Law 91/2025/QH15 Art. 9, 28).

    Grants come from the clinic (``/fhir/Consent``, ``/privacy/v1/consents``;
    ``consent.grants``): a recipient must not authorise itself.  The withdrawal
    is dated now, so no earlier grant can outrank it.  A refused grant is audited.
    """
    bridge = _bridge(request)
    runtime = runtime_of(request)
    purpose = str(body.get("purpose") or "")
    if purpose not in PURPOSES:
        raise InvalidInput(f"purpose must be one of {list(PURPOSES)}", location="purpose")
    with bridge.subscriptions.engine.connect() as conn:
        patient_id = resolve_pseudonym(conn, caller.principal.client_id, str(body.get("subject") or ""))
    if patient_id is None:
        raise NotFound("unknown pseudonym for this CRM", location="subject")
    if body.get("granted") is not False:
        message = (
            "a CRM may record withdrawals and opt-outs only (granted: false); grants come from the clinic"
        )
        runtime.audit.record_denial(caller.context, "crm-consent", patient_ids=[patient_id], reason=message)
        setattr(request.state, AUDITED_STATE, True)
        raise Forbidden(message, location="granted")
    channel = str(body.get("channel") or "crm")
    resource = build_consent(
        patient_id,
        purpose,
        permit=False,
        date_time=format_instant(now_us()),
        channel=channel if channel in CHANNELS else "crm",
        recipient=caller.principal.client_id,
        recorded_by=f"crm:{caller.principal.client_id}",
        recorded_at=format_instant(now_us()),
    )
    results = runtime.store.transact([Create(resource)], caller.context)
    stored = results[0].stored
    return {"consent_id": stored.id if stored else None, "purpose": purpose, "granted": False}


reid_router = APIRouter(prefix="/crm/v1", tags=["privacy"], responses=auth_errors())


@reid_router.post("/reidentify", summary="Pseudonym → patient, for a privacy officer with a reason (audited)")
def reidentify(request: Request, body: dict[str, Any], caller: OfficerCaller) -> JSONResponse:
    crm_id = str(body.get("crm") or "")
    pseudonym = str(body.get("pseudonym") or "")
    reason = str(body.get("reason") or "").strip()
    if len(reason) < 10:
        raise InvalidInput("a reason (at least 10 characters) is required", location="reason")
    runtime = runtime_of(request)
    with runtime.engine.connect() as conn:
        patient_id = resolve_pseudonym(conn, crm_id, pseudonym)
    audit: AuditHook | None = runtime.audit
    if audit is not None:
        event = build_event(
            context=replace(
                caller.context, purpose_of_use="http://terminology.hl7.org/CodeSystem/v3-ActReason|HOPERAT"
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


__all__ = ["reid_router", "router"]
