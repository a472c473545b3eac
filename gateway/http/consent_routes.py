"""Clinic-side consent recording: ``POST /privacy/v1/consents`` (privacy officer, patient's own form).

Why (Law 91/2025/QH15 Art. 9: consent explicit and provable; Art. 28): grants
come from the clinic, never from a CRM (which records withdrawals only,
``/crm/v1/consents``).  This route stamps the proof the law asks for on the
Consent itself — channel, text version shown, who recorded it
(``role:client``) and when — and leaves the rules to ``consent.grants``
(run by the store's consent intake stage on every path): a grant dated in the
future or more than 24 h back is a 400 naming ``Consent.dateTime`` unless a
privacy officer gives a ``late_reason``.  The front desk records through the
HIS on ``/fhir/Consent`` (role ``his_integration``), under the same rules.

Who may: role ``privacy_officer`` for any patient; role ``patient`` for their
own record only (the patient-facing form).  The write is audited by the store
(BALP create) like every change; a refusal is audited here.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from fastapi import APIRouter, Request

from common import Forbidden, InvalidInput
from consent import CHANNELS, PURPOSES, build_consent
from fhir_store import Create, format_instant, now_us
from gateway.http.errors import AUDITED_STATE
from gateway.http.openapi_docs import auth_errors
from gateway.http.principal import PrivacyCaller
from gateway.http.responses import runtime_of

router = APIRouter(prefix="/privacy/v1", tags=["privacy"], responses=auth_errors())


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string", location=name)
    return value.strip() or None


@router.post(
    "/consents", status_code=201, summary="Record a patient's consent answer at the clinic (audited)"
)
def record_consent(request: Request, body: dict[str, Any], caller: PrivacyCaller) -> dict[str, Any]:
    principal = caller.principal
    runtime = runtime_of(request)
    patient_id = str(_text(body, "patient") or "").removeprefix("Patient/")
    if principal.role == "patient":
        patient_id = patient_id or str(principal.patient_id or "")
        if patient_id != principal.patient_id:
            message = "a patient records consent for their own record only"
            runtime.audit.record_denial(caller.context, "consent-record", reason=message)
            setattr(request.state, AUDITED_STATE, True)
            raise Forbidden(message, location="patient")
    elif principal.role != "privacy_officer":
        raise Forbidden(f"role '{principal.role}' may not record consents here", location="role")
    if not patient_id:
        raise InvalidInput("patient is required", location="patient")
    purpose = str(body.get("purpose") or "")
    if purpose not in PURPOSES:
        raise InvalidInput(f"purpose must be one of {list(PURPOSES)}", location="purpose")
    channel = _text(body, "channel") or ("web" if principal.role == "patient" else "")
    if channel not in CHANNELS or channel == "crm":
        raise InvalidInput(
            "channel must name how the answer was given (counter, web, app, ...)", location="channel"
        )
    granted = body.get("granted")
    if not isinstance(granted, bool):
        raise InvalidInput("granted must be true or false", location="granted")
    now = format_instant(now_us())
    resource = build_consent(
        patient_id,
        purpose,
        permit=granted,
        date_time=_text(body, "date_time") or now,
        channel=channel,
        text_version=_text(body, "text_version"),
        text_shown=_text(body, "text"),
        recipient=_text(body, "recipient"),
        recorded_by=f"{principal.role}:{principal.client_id}",
        recorded_at=now,
        late_reason=_text(body, "late_reason"),
    )
    # The route authorised the caller by role; the store write runs on the internal channel
    # (privacy officers hold no FHIR Consent write scope), still under the caller's identity.
    stored = runtime.store.transact([Create(resource)], replace(caller.context, channel="internal"))[0].stored
    return {"consent_id": stored.id if stored else None, "purpose": purpose, "granted": granted}


__all__ = ["router"]
