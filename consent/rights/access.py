"""Access: the patient's data (``$everything``), every access to it and the disclosures to CRMs.

Why (Decree 356/2025/ND-CP Art. 5: access within 10 days; Law 91/2025/QH15:
the data subject may know who received their data; Circular 13/2025/TT-BYT:
traceability of every access): the export is a FHIR ``collection`` Bundle of
the records carebridge holds about the patient (Patient, Encounters,
Appointments, Consents) and a disclosure history read from the audit trail
(``audit.export.search_audit``): every consent decision of the CRM bridge that
*permitted* a disclosure — when, to which CRM, for which purpose, which
resource, under which Consent.  Denied decisions are listed apart (nothing
was sent).  The ``letter`` section (:mod:`consent.rights.letter`) says the same
for a patient — every access with organisation, role, Vietnam time and purpose,
every disclosure with its fields — without ids.  The export itself is an
audited read.
"""

from __future__ import annotations

from typing import Any

import orjson

from audit import search_audit
from consent.pdp import load_consents
from consent.rights import model as m
from consent.rights.calendar import iso
from consent.rights.deps import RightsDeps, internal_context
from consent.rights.letter import build_letter
from consent.rights.outcome import Outcome
from consent.rights.response import DECREE_DEADLINES
from fhir_store import RequestContext

MAX_AUDIT = 5000


def _decision(event: dict[str, Any]) -> dict[str, Any]:
    desc = str(event.get("outcomeDesc") or "")
    recipient = desc.rpartition("recipient=")[2] if "recipient=" in desc else None
    purpose = None
    for concept in event.get("purposeOfEvent") or []:
        for coding in concept.get("coding") or []:
            purpose = coding.get("code")
    resource = consent = None
    for entity in event.get("entity") or []:
        ref = (entity.get("what") or {}).get("reference") or ""
        if ref.startswith("Consent/"):
            consent = ref
        elif (ref and not ref.startswith("Patient/")) or (ref.startswith("Patient/") and resource is None):
            resource = resource or ref
    return {
        "when": event.get("recorded"),
        "recipient": recipient,
        "purpose": purpose,
        "resource": resource,
        "consent": consent,
        "outcome": "permitted" if event.get("outcome") == "0" else "denied",
    }


def patient_events(deps: RightsDeps, patient_id: str) -> list[dict[str, Any]]:
    """Every AuditEvent naming the patient, oldest first (through the audit trail's public API)."""
    if deps.audit is not None:
        deps.audit.flush()
    with deps.store.engine.connect() as conn:
        rows, _total = search_audit(conn, patient=patient_id, count=MAX_AUDIT, newest_first=False)
    return [orjson.loads(r) for r in rows]


def disclosure_history(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        _decision(e)
        for e in events
        if any(c.get("code") == "consent-decision" for c in e.get("subtype") or [])
    ]


def handle_access(
    deps: RightsDeps, req: m.PrivacyRequest, context: RequestContext, body: dict[str, Any]
) -> Outcome:
    store = deps.store
    resources = store.everything(req.patient_id, context=internal_context(context))
    with store.engine.connect() as conn:
        consents = load_consents(conn, req.patient_id, store.cipher)
    consent_resources = [store.read("Consent", c.id).resource() for c in consents]
    entries = [{"fullUrl": s.reference, "resource": s.resource()} for s in resources]
    entries += [{"fullUrl": f"Consent/{c['id']}", "resource": c} for c in consent_resources]
    bundle = {"resourceType": "Bundle", "type": "collection", "total": len(entries), "entry": entries}
    events = patient_events(deps, req.patient_id)
    history = disclosure_history(events)
    now = deps.clock.now_us()
    fields_of = getattr(deps.processors, "disclosed_fields", None)
    document = {
        "request": req.id,
        "type": m.ACCESS,
        "patient": f"Patient/{req.patient_id}",
        "completed_at": iso(now),
        "summary": (
            "Bản sao dữ liệu của bạn và lịch sử chia sẻ cho CRM. / "
            "A copy of your data and the history of what was shared with CRMs."
        ),
        "export": bundle,
        "disclosures": [h for h in history if h["outcome"] == "permitted"],
        "refused_disclosures": len([h for h in history if h["outcome"] == "denied"]),
        "letter": build_letter(events, str(iso(now)), fields_of),
        "legal_basis": [DECREE_DEADLINES, "Law 91/2025/QH15 (right of access)"],
    }
    return Outcome(status=m.COMPLETED, document=document)
