"""What an HL7 message did, read back from the audit trail (the console's message browser).

Why the trail: the journal keeps no patient link (its raw column is sealed and
identifiers are only blind-indexed), but every resource an applied message
created or changed left an import AuditEvent in the same transaction, with the
request id ``hl7-<journal id>`` and the versioned reference of the resource
(IHE BALP; ``gateway.ingest``).  So "which resources did message N write" and
"which messages wrote patient P" are questions for the trail, answered through
its indexes: ``recorded_us`` (a message's events are never older than the
message) and the ``(key, patient, seq)`` index of ``audit_event_key``.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import Connection, select

from audit.schema import audit_event, audit_event_key

#: the request id prefix of an HL7 message's store writes (``gateway.ingest_model.message_context``)
HL7_REQUEST = "hl7-"
#: most events one message page lists
MAX_CHANGES = 500


@dataclass(frozen=True, slots=True)
class RecordedChange:
    """One audited effect of a request: which resource version, what was done, when."""

    seq: int
    recorded_us: int
    action: str  # C/R/U/D/E
    subtype: str | None
    outcome: str
    entity: str | None  # "Type/id/_history/v"
    patient_id: str | None


def changes_of_request(conn: Connection, request_id: str, *, since_us: int) -> list[RecordedChange]:
    """The events recorded for ``request_id`` at or after ``since_us``, oldest first."""
    ae = audit_event.c
    rows = conn.execute(
        select(ae.seq, ae.recorded_us, ae.action, ae.subtype, ae.outcome, ae.entity, ae.patient_id)
        .where(ae.recorded_us >= since_us, ae.request_id == request_id)
        .order_by(ae.seq)
        .limit(MAX_CHANGES)
    ).all()
    return [RecordedChange(*row) for row in rows]


def journal_ids_of_patients(conn: Connection, patient_ids: Collection[str]) -> set[int]:
    """Journal ids of the HL7 messages whose audited effects name one of these patients."""
    if not patient_ids:
        return set()
    k, ae = audit_event_key.c, audit_event.c
    keys = [f"Patient/{pid}"[:128] for pid in patient_ids]
    rows = conn.execute(
        select(ae.request_id)
        .join(audit_event_key, k.seq == ae.seq)
        .where(k.key.in_(keys), k.patient, ae.request_id.startswith(HL7_REQUEST))
        .distinct()
    )
    out: set[int] = set()
    for (request_id,) in rows:
        tail = str(request_id).removeprefix(HL7_REQUEST)
        if tail.isdigit():
            out.add(int(tail))
    return out
