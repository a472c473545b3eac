"""Re-applying erasure tombstones after a restore (``gateway.backup.restore``).

Why (Law 91/2025/QH15 Art. 14; Decree 356/2025/ND-CP Art. 5): restoring an
older backup must not bring back what a patient had erased.  Tombstones are
appended to a file outside the database (``consent.rights.tombstones``); for
every tombstone the restored database does not know, this finds the patient
by hash and repeats the local part of the erasure: pseudonym links, CRM
disclosure state and outbox events removed, consents withdrawn, held
resources labelled restricted, tombstone row inserted.  The CRMs were told
``patient.erased`` when the erasure first ran, so no event is re-sent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, insert, select

from consent.pdp import load_consents
from consent.rights.schema import privacy_tombstone
from consent.rights.tombstones import lookup_hashes, relabel
from fhir_store import FhirStore, Operation, RequestContext, StoreCipher, Update, iter_current_sealed, now_us


def _known_requests(conn: Connection) -> set[str]:
    return {str(r[0]) for r in conn.execute(select(privacy_tombstone.c.request_id).distinct()).all()}


def _find_patients(conn: Connection, hashes: set[str], cipher: StoreCipher) -> list[str]:
    """Every Patient a tombstone names: an erasure covers the merged records of the person too."""
    import orjson

    found = []
    for res_id, version, content in iter_current_sealed(conn, "Patient"):
        plain = cipher.open_resource("Patient", res_id, version, content)  # sealed at rest
        resource = {**orjson.loads(plain), "id": res_id}
        if hashes.intersection(lookup_hashes(resource, cipher)):
            found.append(str(res_id))
    return found


def reapply(
    engine: Engine,
    cipher: StoreCipher,
    records: list[dict[str, Any]],
    *,
    forget_links: Callable[[Connection, str], None] | None = None,
) -> int:
    """How many erasure requests :func:`reapply_requests` applied."""
    return len(reapply_requests(engine, cipher, records, forget_links=forget_links))


def reapply_requests(
    engine: Engine,
    cipher: StoreCipher,
    records: list[dict[str, Any]],
    *,
    forget_links: Callable[[Connection, str], None] | None = None,
) -> list[str]:
    """Apply the tombstones (``tombstones.read_file`` of the file) the restored database lacks.

    Returns the request ids applied, in file order (``carebridge restore`` lists them).
    ``cipher`` is the store's (``fhir_store.key_registry.open_cipher``): content is sealed at rest.
    ``forget_links`` removes what processors (the CRM bridge) hold about the patient; the
    gateway passes it, so this package does not depend on theirs.
    """
    by_request: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_request.setdefault(str(record["request_id"]), []).append(record)
    with engine.connect() as conn:
        missing = {k: v for k, v in by_request.items() if k not in _known_requests(conn)}
    # The one write path, with an empty hook chain on purpose: the CRMs were told when the erasure
    # ran (nothing to re-send), and ``gateway.backup`` recomputes the audit chain after a restore.
    store = FhirStore(engine, cipher=cipher)
    context = RequestContext("restore-tombstones", client_id="carebridge-restore", role="system")
    applied: list[str] = []
    for request_id, rows in missing.items():
        with engine.connect() as conn:
            patient_ids = _find_patients(conn, {str(r["subject_hash"]) for r in rows}, cipher)
        ops: list[Operation] = []
        held: dict[tuple[str, str], None] = {}
        for patient_id in patient_ids:
            held.update(dict.fromkeys((s.resource_type, s.id) for s in store.everything(patient_id)))
            with engine.connect() as conn:
                for consent in load_consents(conn, patient_id, cipher):
                    if consent.status == "active":
                        resource = store.read("Consent", consent.id).resource()
                        resource["status"] = "inactive"
                        ops.append(Update("Consent", consent.id, resource))
        ops += [relabel(kind, res_id) for kind, res_id in held]

        def extra(conn: Connection, _results: Any, pids: list[str] = patient_ids, rs: Any = rows) -> None:
            if forget_links is not None:
                for pid in pids:
                    forget_links(conn, pid)
            conn.execute(
                insert(privacy_tombstone),
                [
                    {
                        "request_id": r["request_id"],
                        "subject_hash": r["subject_hash"],
                        "kind": r.get("kind", "patient"),
                        "erased_us": int(r.get("erased_us") or now_us()),
                        "scope": str(r.get("scope") or "{}"),
                        "legal_basis": str(r.get("legal_basis") or ""),
                    }
                    for r in rs
                ],
            )

        if ops:
            store.transact(ops, context, extra=extra)
        else:
            with store.write_connection() as conn:
                extra(conn, None)
        applied.append(request_id)
    return applied
