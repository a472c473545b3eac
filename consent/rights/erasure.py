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

* Merged and linked records — an erasure covers every Patient reachable through
  ``Patient.link`` (``replaced-by``/``replaces`` from a merge, ADT^A40, and ``seealso``/
  ``refer``: FHIR R4 Patient.link), in both directions: a duplicate the HIS merged
  is the same person, so its record is held and labelled, its consents withdrawn, its
  CRM links destroyed and its identifiers tombstoned like the requested one's
  (:func:`linked_patient_ids`).  A later HIS message or consent about the duplicate
  is then restricted by the tombstone hook and never reaches a CRM.

Everything happens in the request's single store transaction; the tombstone
is then appended to the file kept outside the database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, insert

from audit import Target
from common import CarebridgeError
from consent.pdp import load_consents
from consent.retention import CIRCULAR_RECORDS, CIRCULAR_RETENTION, RECORD_TYPES, held_until
from consent.rights import model as m
from consent.rights.calendar import iso, local_date
from consent.rights.deps import RightsDeps
from consent.rights.outcome import Outcome
from consent.rights.response import DECREE_DEADLINES, LAW_ERASURE
from consent.rights.schema import SEALED, privacy_receipt, privacy_tombstone
from consent.rights.tombstones import append_to_file, relabel, relabelled_version, subject_hashes
from fhir_store import FhirStore, Operation, OperationResult, RequestContext, StoredResource, Update

#: Most Patient records one erasure follows through Patient.link (a merge chain is short; a cycle stops).
MAX_LINKED = 32


def _link_targets(resource: dict[str, Any]) -> list[str]:
    out = []
    for link in resource.get("link") or []:
        ref = str((link.get("other") or {}).get("reference") or "")
        if ref.startswith("Patient/"):
            out.append(ref.split("/", 1)[1])
    return out


def linked_patient_ids(store: FhirStore, patient_id: str) -> list[str]:
    """``patient_id`` first, then every Patient reachable through ``Patient.link`` (any type, both ways).

    Links are followed from each record's own ``link`` list (the survivor's ``replaces``, the
    merged record's ``replaced-by``), so the walk reaches every record of one merge chain.
    """
    found = [patient_id]
    queue = [patient_id]
    while queue and len(found) < MAX_LINKED:
        current = queue.pop(0)
        try:
            resource = store.read("Patient", current).resource()
        except CarebridgeError:  # deleted or unknown: nothing more to follow from it
            continue
        for other in _link_targets(resource):
            if other not in found and len(found) < MAX_LINKED:
                found.append(other)
                queue.append(other)
    return found


def _everything(store: FhirStore, patient_ids: Sequence[str]) -> list[StoredResource]:
    """The records of every linked Patient, each once (the requested patient's first)."""
    out: dict[tuple[str, str], StoredResource] = {}
    for pid in patient_ids:
        try:
            records = store.everything(pid)
        except CarebridgeError:  # a linked record that was deleted holds nothing to erase
            continue
        for stored in records:
            out.setdefault((stored.resource_type, stored.id), stored)
    return list(out.values())


def handle_erasure(
    deps: RightsDeps, req: m.PrivacyRequest, context: RequestContext, body: dict[str, Any]
) -> Outcome:
    store = deps.store
    patient_ids = linked_patient_ids(store, req.patient_id)
    held = _everything(store, patient_ids)
    now = deps.clock.now_us()
    processors = deps.processors
    with store.engine.connect() as conn:
        consents = [
            c for pid in patient_ids for c in load_consents(conn, pid, store.cipher) if c.status == "active"
        ]
        links = {pid: processors.linked(conn, pid) for pid in patient_ids} if processors is not None else {}
    # one receipt per CRM (its deletion receipt names the first linked record it knows)
    receipt_of: dict[str, str] = {}
    for pid, linked in links.items():
        for crm_id in linked:
            receipt_of.setdefault(crm_id, pid)
    crms = sorted(receipt_of)
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
    hashes = [
        pair
        for s in held
        if s.resource_type == "Patient"
        for pair in subject_hashes(s.resource(), store.cipher)
    ]
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
        # other records of the same person (merges, Patient.link) erased with it
        "linked_records": len(patient_ids) - 1,
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
            subjects = {c: processors.subject(c, receipt_of[c]) for c in crms}
            for pid in patient_ids:
                processors.erase(conn, pid, appointment_ids=appointment_ids, retained=retained_note)
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
            detail=(
                f"crm_notified={len(crms)}; consents_withdrawn={len(consents)}; held={len(held)}; "
                f"linked_records={len(patient_ids) - 1}"
            ),
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
