"""Possible duplicate registrations: an HL7 Patient whose CCCD/BHYT already belongs to another Patient.

Why: only a facility's record number (PID-3 type MR/PI within its assigning
authority) is an HL7 upsert key.  A second record number for the same person
is a registration the HIS already made; refusing it would lose the visit it
carries, and HL7 v2 resolves duplicates afterwards with ADT^A40 (HL7 v2.5.1
ch. 3.3.40).  So for the HL7 channel a shared secondary identifier (CCCD,
BHYT, passport, social security: ``common.is_secondary_identifier``) is not a
conflict: the claim stays with the Patient that holds it, the new version is
written, and both Patients get the ``possible-duplicate`` ``meta.tag``
(``common.POSSIBLE_DUPLICATE_TAG``) in the same transaction, through the same
writes, so audit and the CRM hook see it.  HL7 writes keep the tag (the
mapper never sends ``meta``); an A40 merge of the two clears it
(``fhir_store.transaction``), as does an operator's REST update without it.

REST keeps refusing a *new* clash with 409 (a client can correct and retry);
an identifier a Patient already had while another held it is accepted on
every channel (``writer._sync_claims``), so a tagged Patient stays editable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from common import is_possible_duplicate, with_possible_duplicate
from fhir_store.blind_index import secondary_claims
from fhir_store.content_cipher import StoreCipher
from fhir_store.model import ResourceChange, StoredResource
from fhir_store.writer import PendingRows, claim_owners, load_current, write_version


@dataclass(frozen=True, slots=True)
class DuplicateCheck:
    """What an HL7 Patient write becomes: its content, claims left to others, partners to tag."""

    resource: dict[str, Any]
    unclaimed: frozenset[tuple[str, str]] = frozenset()
    partners: tuple[str, ...] = ()


def _survivor(conn: Connection, patient_id: str, cipher: StoreCipher) -> str | None:
    """The Patient to tag for a claim owner: itself, or the survivor it was merged into."""
    stored = load_current(conn, "Patient", patient_id, cipher)
    if stored is None or stored.deleted:
        return None
    for link in stored.resource().get("link") or []:
        ref = str((link.get("other") or {}).get("reference") or "")
        if link.get("type") == "replaced-by" and ref.startswith("Patient/"):
            return ref.split("/", 1)[1]
    return patient_id


def check_patient(
    conn: Connection,
    patient_id: str,
    resource: dict[str, Any],
    previous: StoredResource | None,
    cipher: StoreCipher,
    pending: PendingRows,
) -> DuplicateCheck:
    """Decide the possible-duplicate tag and claims of one HL7 Patient write (see module docstring)."""
    before = None if previous is None or previous.deleted else previous.resource()
    if is_possible_duplicate(before):
        resource = with_possible_duplicate(resource, True)
    new = secondary_claims(resource, cipher.blind) - secondary_claims(before, cipher.blind)
    if not new:
        return DuplicateCheck(resource)
    held = {
        key: owner
        for key, owner in claim_owners(conn, "Patient", new, pending).items()
        if owner != patient_id
    }
    if not held:
        return DuplicateCheck(resource)
    if pending.rows:
        pending.flush(conn)  # an owner written earlier in this transaction is read below
    partners = []
    for owner in dict.fromkeys(held.values()):
        partner = _survivor(conn, owner, cipher)
        if partner is not None and partner != patient_id and partner not in partners:
            partners.append(partner)
    if partners:
        resource = with_possible_duplicate(resource, True)
    return DuplicateCheck(resource, frozenset(held), tuple(partners))


def tag_partner(
    conn: Connection, patient_id: str, now_us: int, cipher: StoreCipher, pending: PendingRows
) -> ResourceChange | None:
    """Tag the other Patient of a possible duplicate as a version of its own (audited, seen by hooks).

    None when it is gone or already tagged (nothing to write).
    """
    if ("Patient", patient_id) in pending.touched:
        pending.flush(conn)  # written earlier in this transaction: read its rows
    current = load_current(conn, "Patient", patient_id, cipher)
    if current is None or current.deleted or is_possible_duplicate(current.resource()):
        return None
    body = with_possible_duplicate(current.resource(), True)
    stored = write_version(conn, "Patient", patient_id, body, current, now_us, pending, cipher=cipher)
    return ResourceChange(
        "update", "Patient", patient_id, stored.version_id, now_us, stored.resource(), current.resource()
    )
