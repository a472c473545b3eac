"""Erasure: the CRM copy goes, the clinical record stays under legal hold, restricted.

Why:

* Law 91/2025/QH15 Art. 14 — erasure reaches processors: every CRM that
  received the patient is notified (:meth:`~consent.rights.processors.Processors.erase`,
  ``patient.erased`` from the CRM bridge) and must confirm; the confirmation is
  recorded as a deletion receipt.  The response says what cannot be erased and why.
* Decree 356/2025/ND-CP Art. 5 — 20 days, 30 when a processor must act.
* Circular 33/2025/TT-BYT and Circular 13/2025/TT-BYT (formerly 46/2018) —
  medical records (Patient, Encounter, Appointment from the HIS) are retained
  (which types, how long, from which date: ``consent.retention``): they are
  kept under legal hold, labelled ``R`` so they are never disclosed to a CRM
  again, still readable by clinicians, and never deleted while held.
* ISO/IEC 27001:2022 A.8.10 (information deletion) — the pseudonym links and
  the CRM disclosure state are deleted, so the pseudonym can no longer be
  resolved (crypto-shredding of the mapping: the per-CRM HMAC key is shared by
  all patients, so the *link* is what is destroyed); the patient's outbox
  events are purged; sealed HIS booking messages of the patient's appointments
  that were already answered are shredded; the patient's consents are withdrawn.

Everything happens in the request's single store transaction; the tombstone
is then appended to the file kept outside the database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, insert

from audit import Target
from consent.pdp import load_consents
from consent.retention import CIRCULAR_RECORDS, CIRCULAR_RETENTION, RECORD_TYPES, held_until
from consent.rights import model as m
from consent.rights.calendar import iso, local_date
from consent.rights.deps import RightsDeps
from consent.rights.outcome import Outcome
from consent.rights.response import DECREE_DEADLINES, LAW_ERASURE
from consent.rights.schema import SEALED, privacy_receipt, privacy_tombstone
from consent.rights.tombstones import append_to_file, relabel, relabelled_version, subject_hashes
from fhir_store import Operation, OperationResult, RequestContext, Update


def handle_erasure(
    deps: RightsDeps, req: m.PrivacyRequest, context: RequestContext, body: dict[str, Any]
) -> Outcome:
    store = deps.store
    held = store.everything(req.patient_id)
    now = deps.clock.now_us()
    with store.engine.connect() as conn:
        consents = [c for c in load_consents(conn, req.patient_id, store.cipher) if c.status == "active"]
        processors = deps.processors
        crms = processors.linked(conn, req.patient_id) if processors is not None else []
    ops: list[Operation] = []
    consent_ops: list[Operation] = []
    for record in consents:
        stored = store.read("Consent", record.id)
        resource = stored.resource()
        resource["status"] = "inactive"
        consent_ops.append(Update("Consent", record.id, resource))
    until = held_until([s.resource() for s in held], local_date(now))
    appointment_ids = [s.id for s in held if s.resource_type == "Appointment"]
    counts = {t: sum(1 for s in held if s.resource_type == t) for t in RECORD_TYPES}
    retained_note = [
        {"what": "medical record (Patient, Encounter, Appointment)", "why": CIRCULAR_RETENTION},
    ]
    hashes = subject_hashes(next(s.resource() for s in held if s.resource_type == "Patient"), store.cipher)
    scope = req.scope or {"crm": "all", "clinical": "retained"}
    document: dict[str, Any] = {
        "request": req.id,
        "type": m.ERASURE,
        "patient": f"Patient/{req.patient_id}",
        "completed_at": iso(now) if not crms else None,
        "summary": (
            "Dữ liệu của bạn đã bị xoá khỏi các hệ thống CRM; hồ sơ bệnh án được lưu giữ theo luật "
            "và không bao giờ được chia sẻ lại cho CRM. / Your data was erased from the CRM systems; "
            "the medical record is retained as the law requires and is never disclosed to a CRM again."
        ),
        "erased": [
            {
                "what": "CRM copy (pseudonymous profile, contact data, appointment and visit notifications)",
                "where": crms or ["no CRM had received this patient"],
                "how": "patient.erased sent to each CRM; deletion receipt requested",
                "count": len(crms),
            },
            {
                "what": "pseudonym links and CRM disclosure state (the CRM mapping)",
                "where": "carebridge",
                "how": "destroyed: the CRM pseudonym can no longer be resolved to the patient",
                "count": len(crms),
            },
            {
                "what": "consents for CRM purposes",
                "where": "carebridge",
                "how": "withdrawn (status inactive)",
                "count": len(consents),
            },
            {
                "what": "CRM outbox events about the patient (delivered or not)",
                "where": "carebridge",
                "how": "purged",
            },
            {
                "what": "sealed booking messages to the HIS for answered appointments",
                "where": "carebridge",
                "how": "crypto-shredded (ciphertext removed)",
            },
        ],
        "retained": [
            {
                "what": f"{kind} record(s)",
                "count": counts[kind],
                "until": f"{until.isoformat()} (at least)",
                "legal_basis": [CIRCULAR_RETENTION, CIRCULAR_RECORDS],
                "restriction": "labelled restricted (R) under legal hold: never disclosed to a CRM",
            }
            for kind in RECORD_TYPES
            if counts[kind]
        ]
        + [
            {
                "what": "HL7 message journal of the HIS messages (source of the medical record)",
                "until": f"{until.isoformat()} (at least)",
                "legal_basis": [CIRCULAR_RETENTION],
                "restriction": "not disclosed; kept with the medical record",
            },
            {
                "what": "audit trail (who accessed or disclosed what, including this erasure)",
                "until": f"{until.isoformat()} (at least)",
                "legal_basis": [CIRCULAR_RECORDS, "ISO/IEC 27001:2022 A.5.33, A.8.15"],
                "restriction": "append-only; readable by compliance officers only",
            },
            {
                "what": "erasure tombstone (hashes only, request id, date, scope, legal basis)",
                "until": "indefinitely",
                "legal_basis": [LAW_ERASURE],
                "restriction": "prevents re-creating the patient in a CRM from a later HIS message",
            },
        ],
        "processors": [{"crm": c, "notified_at": iso(now), "confirmed_at": None} for c in crms],
        "legal_basis": [LAW_ERASURE, DECREE_DEADLINES, CIRCULAR_RETENTION, CIRCULAR_RECORDS],
    }
    scope_text = orjson_text(scope)
    basis = f"{LAW_ERASURE}; retained under {CIRCULAR_RETENTION}"
    sealed_scope = SEALED["privacy_tombstone"]["scope"]
    tombstone_rows = [  # also the records of the file outside the database: the scope stays sealed there
        {
            "request_id": req.id,
            "subject_hash": h,
            "kind": kind,
            "erased_us": now,
            "scope": sealed_scope.seal(store.cipher, (req.id, h), scope_text),
            "legal_basis": basis,
        }
        for h, kind in dict(hashes).items()
    ]

    relabel_ops: list[Operation] = [relabel(s.resource_type, s.id) for s in held]

    def in_transaction(conn: Connection, results: Sequence[OperationResult]) -> None:
        if processors is not None:
            subjects = {c: processors.subject(c, req.patient_id) for c in crms}
            processors.erase(conn, req.patient_id, appointment_ids=appointment_ids, retained=retained_note)
            for crm_id, subject in subjects.items():
                conn.execute(
                    insert(privacy_receipt).values(
                        request_id=req.id,
                        crm_id=crm_id,
                        pseudonym_hash=hashlib.sha256(subject.encode()).hexdigest(),
                        notified_us=now,
                        confirmed_us=None,
                        note=None,
                    )
                )
        first = len(ops) + len(consent_ops)  # results of relabel_ops (written and audited by the store)
        for stored, result in zip(held, results[first : first + len(held)], strict=True):
            version = relabelled_version(result)
            if version is not None:
                deps.audit_in(
                    conn,
                    context,
                    "hold-labelled",
                    patient_id=req.patient_id,
                    request_id=req.id,
                    detail="restricted (R) + legal hold",
                    targets=[Target(stored.resource_type, stored.id, version)],
                )
        conn.execute(insert(privacy_tombstone), tombstone_rows)
        deps.audit_in(
            conn,
            context,
            "erasure-applied",
            patient_id=req.patient_id,
            request_id=req.id,
            action="D",
            detail=f"crm_notified={len(crms)}; consents_withdrawn={len(consents)}; held={len(held)}",
        )

    def after_commit() -> None:
        append_to_file(
            deps.tombstone_path, [{**r, "subject_hash": r["subject_hash"]} for r in tombstone_rows]
        )
        if processors is not None:
            processors.wake()

    return Outcome(
        status=m.IN_PROGRESS if crms else m.COMPLETED,
        document=document,
        ops=ops + consent_ops + relabel_ops,
        business_status="awaiting-processor-receipts" if crms else None,
        in_transaction=in_transaction,
        after_commit=after_commit,
    )


def orjson_text(value: Any) -> str:
    import orjson

    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
