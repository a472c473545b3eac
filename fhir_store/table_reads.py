"""Reads that other packages make on the store's tables, named here beside the tables.

Why: the tables (``fhir_store.schema``) and their dialect-specific statements
belong to this package; consent, the CRM bridge and the benchmarks ask for
what they need by name instead of writing SQL on ``resource_current`` or
``search_reference`` themselves, so a change to the store's layout is made
(and reviewed) in one package.  Content comes back sealed, as stored: callers
open it with the store's cipher (``fhir_store.content_cipher.StoreCipher``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sqlalchemy import Connection, select

from fhir_store.driver_sql import DriverQuery
from fhir_store.schema import identifier_claim, resource_current

# Read for every disclosure decision (each HL7 message that may reach a CRM): a driver-level
# statement (fhir_store.driver_sql), cheaper in client CPU than the same query through Core.
_CURRENT_CONSENTS = DriverQuery(
    "SELECT r.res_id, r.last_updated_us, r.version, r.content FROM resource_current r"
    " WHERE r.res_type = 'Consent' AND r.deleted = :deleted AND r.res_id IN ("
    "SELECT s.res_id FROM search_reference s WHERE s.res_type = 'Consent' AND s.param = 'patient'"
    " AND s.target_type = 'Patient' AND s.target_id = :patient)"
)


def current_consents_of_patient(conn: Connection, patient_id: str) -> list[tuple[Any, ...]]:
    """The patient's current (not deleted) Consents as ``(res_id, last_updated_us, version, sealed content)``.

    Read on ``conn``, so it sees the caller's transaction's own writes (a withdrawal
    committed in the same transaction is seen: Law 91/2025/QH15 Art. 9).
    """
    return _CURRENT_CONSENTS.all(conn, {"patient": patient_id, "deleted": False})


def iter_current_sealed(conn: Connection, resource_type: str) -> Iterator[tuple[str, int, bytes]]:
    """Every current (not deleted) resource of one type as ``(res_id, version, sealed content)``.

    A full scan of the type: for rare administrative paths (re-applying erasure
    tombstones after a restore), never for a request.
    """
    rows = conn.execute(
        select(resource_current.c.res_id, resource_current.c.version, resource_current.c.content).where(
            resource_current.c.res_type == resource_type, resource_current.c.deleted.is_(False)
        )
    )
    for res_id, version, content in rows:
        yield str(res_id), int(version), bytes(content)


def claimed_ids(conn: Connection, resource_type: str, blinded_values: Iterable[str]) -> dict[str, str]:
    """Resource id per claimed identifier, keyed by the identifier's blind index value."""
    rows = conn.execute(
        select(identifier_claim.c.value, identifier_claim.c.res_id).where(
            identifier_claim.c.res_type == resource_type,
            identifier_claim.c.value.in_(list(blinded_values)),
        )
    ).all()
    return {str(value): str(res_id) for value, res_id in rows}
