"""Tables of the patient-rights workflow (own ``metadata``, registered by ``consent.registration``; migration ``0005``).

* ``privacy_request`` — one row per data-subject request with its clocks
  (Decree 356/2025/ND-CP Art. 5).  ``open_key`` is ``<patient>|<type>`` while
  the request is open and NULL afterwards: a unique index makes a duplicate
  open request of the same type impossible even under concurrent filing.
* ``privacy_tombstone`` — per completed erasure, one row per subject hash
  (the patient id, and each HIS identifier, hashed), with the request, date,
  scope and legal basis (Law 91/2025/QH15 Art. 14): the next HIS message for
  that patient — even one that would create a new Patient id — is caught.  Also appended to a file outside the
  database so a restore of an older backup re-applies it.
* ``privacy_receipt`` — per CRM (processor) that was told ``patient.erased``:
  when it was notified and when it confirmed the deletion.  Only a SHA-256
  of the pseudonym is kept (the link itself is destroyed by the erasure).

Sealed at rest (``fhir_store.sealed_columns``, AES-256-GCM under the store's
content key, bound to table, column and row; migration ``0009`` widened
``privacy_receipt.note`` for it): everything free-form a patient, a staff
member or a CRM typed, and the response document (an access export is the
patient's whole record) — see :data:`SEALED` and docs/compliance.md
"Side tables at rest".  Ids, types, statuses, clocks, keyed or SHA-256 hashes
and the constant legal basis stay in clear: the workflow queries them.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Index, Integer, String, Table, Text

from fhir_store import SealedText, new_metadata

metadata = new_metadata()

privacy_request = Table(
    "privacy_request",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("type", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("scope", Text, nullable=False),  # JSON
    Column("reason", Text, nullable=False),
    Column("filed_by", String(100), nullable=False),
    Column("filed_role", String(40), nullable=False),
    Column("verification", Text, nullable=True),
    Column("processor_involved", Boolean, nullable=False),
    Column("created_us", BigInteger, nullable=False),
    Column("ack_due_us", BigInteger, nullable=False),
    Column("due_us", BigInteger, nullable=False),
    Column("acknowledged_us", BigInteger, nullable=True),
    Column("extended_us", BigInteger, nullable=True),
    Column("extension_days", Integer, nullable=True),
    Column("extension_reason", Text, nullable=True),
    Column("completed_us", BigInteger, nullable=True),
    Column("closed_us", BigInteger, nullable=True),
    Column("close_reason", Text, nullable=True),
    Column("task_id", String(64), nullable=True),
    Column("response", Text, nullable=True),  # JSON response document
    Column("updated_us", BigInteger, nullable=False),
    Column("open_key", String(120), nullable=True),
    Index(None, "patient_id"),
    Index(None, "status"),
    Index("uq_privacy_request_open_key", "open_key", unique=True),
)

privacy_tombstone = Table(
    "privacy_tombstone",
    metadata,
    Column("request_id", String(36), primary_key=True),
    Column("subject_hash", String(64), primary_key=True),
    Column("kind", String(12), nullable=False),  # patient | identifier
    Column("erased_us", BigInteger, nullable=False),
    Column("scope", Text, nullable=False),  # JSON
    Column("legal_basis", Text, nullable=False),
    Index(None, "subject_hash"),
)

privacy_receipt = Table(
    "privacy_receipt",
    metadata,
    Column("request_id", String(36), primary_key=True),
    Column("crm_id", String(100), primary_key=True),
    Column("pseudonym_hash", String(64), nullable=False),
    Column("notified_us", BigInteger, nullable=False),
    Column("confirmed_us", BigInteger, nullable=True),
    Column("note", Text, nullable=True),  # sealed (migration 0009)
    Index(None, "crm_id", "pseudonym_hash"),
)

PRIVACY_TABLES = (privacy_request, privacy_tombstone, privacy_receipt)


def _sealed(table: Table, *columns: str) -> dict[str, SealedText]:
    key = tuple(c.name for c in table.primary_key.columns)
    return {c: SealedText(table, c, key) for c in columns}


#: ``{table: {column: handle}}`` of the sealed columns (seal with the row's primary key values).
SEALED = {
    "privacy_request": _sealed(
        privacy_request,
        "scope",  # JSON chosen by the filer: may carry free text
        "reason",  # the patient's own words
        "verification",  # how staff checked the identity (document numbers, names)
        "extension_reason",
        "close_reason",
        "response",  # response document: an access export holds the whole record
    ),
    "privacy_tombstone": _sealed(privacy_tombstone, "scope"),
    "privacy_receipt": _sealed(privacy_receipt, "note"),  # the CRM's free text
}
