"""Consent vocabulary, the Consent resource profile we accept, and its search parameters.

Why (Law 91/2025/QH15 Art. 9 and 26; Decree 356/2025/ND-CP Art. 7): consent to
process health data must be *per purpose*, *explicit* and *provable*
(who, when, which text and version was shown, through which channel) and
*withdrawable*.  Marketing has its own consent that can never be bundled with
care purposes (Art. 28: marketing needs a separate consent and an opt-out).

A carebridge Consent is a FHIR R4 Consent (https://hl7.org/fhir/R4/consent.html):

* ``patient`` — ``Patient/<id>``;
* ``dateTime`` — when the patient agreed or withdrew;
* ``provision.type`` — ``permit`` (agreement) or ``deny`` (withdrawal / opt-out);
* ``provision.purpose`` — codes of :data:`PURPOSE_SYSTEM`; ``marketing`` alone;
* ``provision.actor`` (optional) — the recipient (role ``IRCP``) identified by
  ``{"identifier": {"system": RECIPIENT_SYSTEM, "value": <CRM client id>}}``;
  a grant without an actor covers the CRMs that declare they serve its purpose
  (``consent.pdp.decide``), a withdrawal without an actor every CRM;
* ``sourceAttachment`` — the text shown (``data``, base64) and its version
  (``title``), required for a ``permit``;
* extension :data:`CHANNEL_URL` (``valueCode``: counter, web, app, zalo, sms,
  phone, crm) — the channel the answer came through.

Withdrawal is either a newer ``deny`` Consent for the purpose or setting the
permit's ``status`` to ``inactive``; both take effect for every later
disclosure at once (the decision point reads the current store state inside
the very transaction that would disclose).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from common import InvalidInput
from consent.grants import LATE_REASON_URL, RECORDED_AT_URL, RECORDED_BY_URL, check_grant
from consent.retention import RESTRICTED_CODE, is_held
from fhir_store import RequestContext, ResourceChange, ResourceSearchSpec, SearchParam, now_us

PURPOSE_SYSTEM = "https://fhir.carebridge.vn/CodeSystem/consent-purpose"
APPOINTMENT_REMINDER = "appointment-reminder"
POST_VISIT_CARE = "post-visit-care"
MARKETING = "marketing"
PURPOSES: tuple[str, ...] = (APPOINTMENT_REMINDER, POST_VISIT_CARE, MARKETING)

RECIPIENT_SYSTEM = "https://id.carebridge.vn/crm-client"
CHANNEL_URL = "https://fhir.carebridge.vn/StructureDefinition/consent-channel"
CHANNELS = frozenset({"counter", "web", "app", "zalo", "sms", "phone", "crm", "paper"})
CONSENT_SCOPE = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}]
}
RECIPIENT_ROLE = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]
}

# Security labels whose resources never reach a CRM, whatever the consent says
# (v3-Confidentiality R/V, v3-ActCode sensitivity PSY/HIV).
RESTRICTED_LABELS = frozenset({RESTRICTED_CODE, "V", "PSY", "HIV"})


def security_labels(resource: dict[str, Any] | None) -> frozenset[str]:
    """Codes of ``meta.security`` (system-agnostic: R/V/PSY/HIV are unambiguous codes).

    A resource under legal hold counts as restricted (``R``) even if a write dropped
    the label: the retention rule (``consent.retention``) withholds it from processors.
    """
    if not resource:
        return frozenset()
    labels = (resource.get("meta") or {}).get("security") or []
    codes = frozenset(str(c.get("code")) for c in labels if isinstance(c, dict) and c.get("code"))
    return codes | {RESTRICTED_CODE} if is_held(resource) else codes


def consent_patient(resource: dict[str, Any]) -> str | None:
    ref = (resource.get("patient") or {}).get("reference")
    if isinstance(ref, str) and ref.startswith("Patient/"):
        return ref.split("/", 1)[1]
    return None


def consent_purposes(resource: dict[str, Any]) -> list[str]:
    provision = resource.get("provision") or {}
    return [
        str(c.get("code"))
        for c in provision.get("purpose") or []
        if isinstance(c, dict) and c.get("system") == PURPOSE_SYSTEM and c.get("code")
    ]


def consent_recipients(resource: dict[str, Any]) -> list[str]:
    """CRM client ids named as recipients; empty means 'every configured CRM'."""
    out: list[str] = []
    for actor in (resource.get("provision") or {}).get("actor") or []:
        ident = ((actor or {}).get("reference") or {}).get("identifier") or {}
        if ident.get("system") == RECIPIENT_SYSTEM and ident.get("value"):
            out.append(str(ident["value"]))
    return out


def check_consent(resource: dict[str, Any]) -> None:
    """Semantic rules of a carebridge Consent (on top of the FHIR structure check)."""
    if consent_patient(resource) is None:
        raise InvalidInput("Consent.patient must reference Patient/<id>", location="Consent.patient")
    if not resource.get("dateTime"):
        raise InvalidInput(
            "Consent.dateTime (when the patient answered) is required", location="Consent.dateTime"
        )
    provision = resource.get("provision") or {}
    if provision.get("type") not in ("permit", "deny"):
        raise InvalidInput("Consent.provision.type must be permit or deny", location="Consent.provision.type")
    codes = consent_purposes(resource)
    if not codes or len(codes) != len(provision.get("purpose") or []):
        raise InvalidInput(
            f"Consent.provision.purpose must use {PURPOSE_SYSTEM}", location="Consent.provision.purpose"
        )
    unknown = [c for c in codes if c not in PURPOSES]
    if unknown:
        raise InvalidInput(f"unknown consent purpose {unknown[0]!r}", location="Consent.provision.purpose")
    if MARKETING in codes and len(set(codes)) > 1:
        raise InvalidInput(
            "marketing needs its own Consent (Law 91/2025 Art. 28); do not bundle it with care purposes",
            location="Consent.provision.purpose",
        )
    channel = [e for e in resource.get("extension") or [] if e.get("url") == CHANNEL_URL]
    if not channel or channel[0].get("valueCode") not in CHANNELS:
        raise InvalidInput(
            f"the consent channel extension ({CHANNEL_URL}) is required", location="Consent.extension"
        )
    if provision.get("type") == "permit":
        attachment = resource.get("sourceAttachment") or {}
        if not attachment.get("title") or not (attachment.get("data") or attachment.get("url")):
            raise InvalidInput(
                "a permit must record the text shown and its version (sourceAttachment.data/url + title)",
                location="Consent.sourceAttachment",
            )


class ConsentIntakeHook:
    """StoreHook: rejects (rolls back) Consents that break :func:`check_consent` or
    :func:`consent.grants.check_grant` (who may grant, and when a grant may be dated).

    A hook rather than a route check so REST ``/fhir/Consent``, transaction
    Bundles and the CRM API all go through the same rules.
    """

    def on_changes(
        self, conn: Connection, changes: Sequence[ResourceChange], context: RequestContext
    ) -> None:
        for change in changes:
            if change.resource_type == "Consent" and change.resource is not None:
                check_consent(change.resource)
                check_grant(change.resource, change.previous, context, now_us())


def build_consent(
    patient_id: str,
    purpose: str,
    *,
    permit: bool,
    date_time: str,
    channel: str,
    text_version: str | None = None,
    text_shown: str | None = None,
    recipient: str | None = None,
    recorded_by: str | None = None,
    recorded_at: str | None = None,
    late_reason: str | None = None,
) -> dict[str, Any]:
    """A Consent resource in the profile above (used by the CRM and clinic APIs and the tests).

    ``recorded_by``/``recorded_at``: who entered the answer and when
    (``consent.grants``); ``late_reason``: a privacy officer's reason for a
    grant dated outside the accepted window.
    """
    import base64

    resource: dict[str, Any] = {
        "resourceType": "Consent",
        "status": "active",
        "scope": CONSENT_SCOPE,
        "category": [{"coding": [{"system": PURPOSE_SYSTEM, "code": purpose}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "dateTime": date_time,
        "extension": [{"url": CHANNEL_URL, "valueCode": channel}],
        "policy": [{"uri": f"https://fhir.carebridge.vn/consent-text/{purpose}"}],
        "provision": {
            "type": "permit" if permit else "deny",
            "purpose": [{"system": PURPOSE_SYSTEM, "code": purpose}],
        },
    }
    if text_shown is not None or text_version is not None:
        resource["sourceAttachment"] = {
            "contentType": "text/plain; charset=utf-8",
            "language": "vi",
            "title": text_version or "unversioned",
            "data": base64.b64encode((text_shown or "").encode()).decode(),
        }
    stamps = ((RECORDED_BY_URL, recorded_by), (RECORDED_AT_URL, recorded_at), (LATE_REASON_URL, late_reason))
    for url, value in stamps:
        if value:
            kind = "valueDateTime" if url == RECORDED_AT_URL else "valueString"
            resource["extension"].append({"url": url, kind: value})
    if recipient:
        resource["provision"]["actor"] = [
            {
                "role": RECIPIENT_ROLE,
                "reference": {"identifier": {"system": RECIPIENT_SYSTEM, "value": recipient}},
            }
        ]
    return resource


#: ``/fhir/Consent``: validation and search parameters (registered by ``consent.registration``).
CONSENT_SEARCH = ResourceSearchSpec(
    "Consent",
    {
        p.name: p
        for p in (
            SearchParam("patient", "reference", ("patient",), targets=("Patient",)),
            SearchParam("status", "token", ("status",)),
            SearchParam("category", "token", ("category",)),
            SearchParam("purpose", "token", ("provision.purpose",)),
            SearchParam("date", "date", ("dateTime",)),
        )
    },
    {"date": "date"},
)
