"""Rectification, restriction and objection.

Why (Decree 356/2025/ND-CP Art. 5; Law 91/2025/QH15 Art. 9 and 28):

* **rectification** — the medical record's source of truth is the
  HIS: staff correct it there (the corrected ADT flows back in and the CRM copy
  is refreshed by the next ``patient.upserted``) and record what was corrected
  (``resolution``, required);
* **restriction** — processing for CRM purposes stops: the Patient is
  labelled restricted (``meta.security`` R), which the consent decision point
  never discloses (and the CRMs receive a ``consent.changed`` suppression);
* **objection** — the patient objects to processing for purposes (scope
  ``purposes``, default all CRM purposes): a ``deny`` Consent is recorded per
  purpose, effective for every later disclosure at once;
* **withdrawal** of consent (Law 91/2025/QH15 Art. 9; its own clock in
  Decree 356/2025/ND-CP Art. 5) — recorded the same way, a ``deny`` Consent per
  purpose named (default all), so the decision point refuses at once.

Periods: :data:`consent.rights.deadlines.CLOCKS`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from audit import Target
from common import InvalidInput
from consent.purposes import PURPOSES, build_consent
from consent.rights import model as m
from consent.rights.calendar import iso
from consent.rights.deps import RightsDeps
from consent.rights.outcome import Outcome
from consent.rights.response import DECREE_DEADLINES
from consent.rights.tombstones import relabel, relabelled_version
from fhir_store import Create, Operation, OperationResult, RequestContext

LAW_CONSENT = "Law 91/2025/QH15 Art. 9 (withdrawal), Art. 28 (marketing opt-out)"


def _document(req: m.PrivacyRequest, now: int, summary: str, actions: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "request": req.id,
        "type": req.type,
        "patient": f"Patient/{req.patient_id}",
        "completed_at": iso(now),
        "summary": summary,
        "actions": actions,
        "legal_basis": [DECREE_DEADLINES, LAW_CONSENT],
    }


def handle_rectification(
    deps: RightsDeps, req: m.PrivacyRequest, context: RequestContext, body: dict[str, Any]
) -> Outcome:
    resolution = str(body.get("resolution") or "").strip()
    if len(resolution) < 5:
        raise InvalidInput(
            "describe what was corrected at the source (resolution); the HIS owns the record",
            location="resolution",
        )
    now = deps.clock.now_us()
    actions = [
        {"what": "correction at the source (HIS)", "how": resolution},
        {
            "what": "CRM copy",
            "how": "refreshed by the next patient.upserted when the HIS sends the correction",
        },
    ]
    return Outcome(m.COMPLETED, _document(req, now, "Dữ liệu đã được chỉnh sửa. / Data corrected.", actions))


def handle_restriction(
    deps: RightsDeps, req: m.PrivacyRequest, context: RequestContext, body: dict[str, Any]
) -> Outcome:
    def in_transaction(conn: Connection, results: Sequence[OperationResult]) -> None:
        version = relabelled_version(results[0])
        if version is not None:
            deps.audit_in(
                conn,
                context,
                "restricted-labelled",
                patient_id=req.patient_id,
                request_id=req.id,
                targets=[Target("Patient", req.patient_id, version)],
            )

    now = deps.clock.now_us()
    actions = [
        {
            "what": "processing for CRM purposes",
            "how": "stopped: the patient record is labelled restricted (R) and never disclosed to a CRM",
        }
    ]
    summary = "Việc xử lý dữ liệu cho CRM đã bị hạn chế. / Processing for CRM purposes is restricted."
    return Outcome(
        m.COMPLETED,
        _document(req, now, summary, actions),
        ops=[relabel("Patient", req.patient_id, hold=False)],
        in_transaction=in_transaction,
    )


def _deny_purposes(deps: RightsDeps, req: m.PrivacyRequest, how: str, summary: str) -> Outcome:
    purposes = list((req.scope or {}).get("purposes") or PURPOSES)
    unknown = [p for p in purposes if p not in PURPOSES]
    if unknown:
        raise InvalidInput(f"unknown purpose {unknown[0]!r}; expected {list(PURPOSES)}", location="scope")
    now = deps.clock.now_us()
    ops: list[Operation] = [
        Create(
            build_consent(
                req.patient_id,
                purpose,
                permit=False,
                date_time=str(iso(now)),
                channel="paper" if req.filed_role != "patient" else "app",
                text_version=f"privacy-request-{req.id}",
            )
        )
        for purpose in purposes
    ]
    actions = [{"what": f"processing for {p}", "how": how, "count": 1} for p in purposes]
    return Outcome(m.COMPLETED, _document(req, now, summary, actions), ops=ops)


def handle_objection(
    deps: RightsDeps, req: m.PrivacyRequest, context: RequestContext, body: dict[str, Any]
) -> Outcome:
    summary = "Phản đối của bạn đã được ghi nhận. / Your objection is recorded."
    return _deny_purposes(deps, req, "objection recorded as a deny Consent", summary)


def handle_withdrawal(
    deps: RightsDeps, req: m.PrivacyRequest, context: RequestContext, body: dict[str, Any]
) -> Outcome:
    summary = "Bạn đã rút lại sự đồng ý. / Your consent is withdrawn."
    return _deny_purposes(deps, req, "consent withdrawn: a deny Consent, effective at once", summary)
