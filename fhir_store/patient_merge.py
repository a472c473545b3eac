"""Patient merge (ADT^A40, R5 ``Patient/$merge``) and unlink (ADT^A37), inside a transaction.

The merge follows the FHIR R5 ``Patient/$merge`` result
(https://hl7.org/fhir/R5/patient-operation-merge.html): the source is kept,
inactive, with ``link.type = replaced-by``; the target gets ``replaces``; the
source's Encounters and Appointments are repointed.  A source that never
reached carebridge is recorded as a retired record so later messages quoting
its number resolve to the survivor.  The unlink removes the pair's links
(``fhir_store.patient_links.unlinked``).  Writes go through the caller's
``apply`` so they take the one write path.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection

from common import BusinessRuleViolation, NotFound, with_possible_duplicate
from fhir_store.content_cipher import StoreCipher
from fhir_store.event_order import EventOrder, mark_merged
from fhir_store.model import MergePatients, Operation, OperationResult, StoredResource, UnlinkPatients, Update
from fhir_store.patient_links import unlinked
from fhir_store.search import referencing_ids
from fhir_store.writer import find_identifier_owner, load_current

Apply = Callable[[list[Operation]], None]
Rewrite = Callable[[Any, dict[str, str]], Any]


def merge_patients(
    conn: Connection,
    op: MergePatients,
    cipher: StoreCipher,
    apply: Apply,
    rewrite: Rewrite,
    event: EventOrder | None = None,
) -> OperationResult:
    """A40: the source becomes inactive, ``replaced-by`` the target; its visits and bookings move.

    With ``event`` (an HL7 merge), the source remembers when it was merged, so a
    message from before the merge that arrives later is written to it, not to the
    survivor (``fhir_store.event_order``).
    """
    target_system, target_value = op.target_identifier
    target_id = find_identifier_owner(conn, "Patient", target_system, cipher.blind(target_value))
    if target_id is None:
        raise NotFound(f"surviving patient {op.target_identifier[1]} is unknown", location="PID-3")
    target = load_current(conn, "Patient", target_id, cipher)
    if target is None or target.deleted:
        raise NotFound("surviving patient was deleted", location="PID-3")
    source_id = find_identifier_owner(
        conn, "Patient", op.source_identifier[0], cipher.blind(op.source_identifier[1])
    )
    if source_id == target_id:
        raise BusinessRuleViolation("a patient cannot be merged into itself", location="MRG-1")
    source = None if source_id is None else load_current(conn, "Patient", source_id, cipher)
    if source_id is None:
        # The duplicate never reached us: record its identifier as a retired record so
        # later messages quoting it resolve to the survivor.
        source_id = str(uuid.uuid4())
        source_body: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": [{"system": op.source_identifier[0], "value": op.source_identifier[1]}],
        }
    else:
        source_body = source.resource() if source and not source.deleted else {"resourceType": "Patient"}
    # the merge is the resolution of a possible duplicate: neither record is one any more
    source_body = with_possible_duplicate(source_body, False)
    source_body["active"] = False
    source_body["link"] = [{"other": {"reference": f"Patient/{target_id}"}, "type": "replaced-by"}]
    target_body = with_possible_duplicate(target.resource(), False)
    links = [
        lk
        for lk in target_body.get("link", [])
        if lk.get("other", {}).get("reference") != f"Patient/{source_id}"
    ]
    target_body["link"] = [*links, {"other": {"reference": f"Patient/{source_id}"}, "type": "replaces"}]
    ops: list[Operation] = [
        Update("Patient", source_id, source_body),
        Update("Patient", target_id, target_body),
    ]
    old_ref, new_ref = f"Patient/{source_id}", f"Patient/{target_id}"
    for res_type, param in (("Encounter", "subject"), ("Appointment", "actor")):
        for res_id in referencing_ids(conn, res_type, param, "Patient", [source_id]):
            current = load_current(conn, res_type, res_id, cipher)
            if current is not None and not current.deleted:
                ops.append(Update(res_type, res_id, rewrite(current.resource(), {old_ref: new_ref})))
    apply(ops)
    if event is not None:
        mark_merged(conn, source_id, event)
    return OperationResult(
        200, load_current(conn, "Patient", target_id, cipher), f"merged Patient/{source_id}"
    )


def _owner_of(
    conn: Connection, identifier: tuple[str, str], cipher: StoreCipher, where: str
) -> StoredResource:
    found = find_identifier_owner(conn, "Patient", identifier[0], cipher.blind(identifier[1]))
    stored = None if found is None else load_current(conn, "Patient", found, cipher)
    if stored is None or stored.deleted:
        raise NotFound(f"patient {identifier[1]} is unknown", location=where)
    return stored


def unlink_patients(
    conn: Connection, op: UnlinkPatients, cipher: StoreCipher, apply: Apply
) -> OperationResult:
    """A37: remove the pair's links both ways; a record replaced by the other is active again."""
    first = _owner_of(conn, op.first_identifier, cipher, "PID-3")
    second = _owner_of(conn, op.second_identifier, cipher, "PID-3")
    if first.id == second.id:
        raise BusinessRuleViolation("a patient cannot be unlinked from itself", location="PID-3")
    ops: list[Operation] = [
        Update("Patient", first.id, unlinked(first.resource(), second.id)),
        Update("Patient", second.id, unlinked(second.resource(), first.id)),
    ]
    apply(ops)
    return OperationResult(
        200, load_current(conn, "Patient", first.id, cipher), f"unlinked Patient/{second.id}"
    )
