"""The CRM bridge as the processors of the patient-rights workflow (``consent.rights.processors``).

Why here: erasure has to reach the CRM's link table, outbox and sealed HIS
booking messages, which are this package's tables; the rights workflow only
knows the :class:`consent.rights.processors.Processors` protocol, and the
gateway wires this implementation into it (``gateway.runtime``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlalchemy import Connection, delete, select, update

from consent import KeyStore
from crm_bridge.config import ProjectionConfig
from crm_bridge.outbox import emit_patient_erased
from crm_bridge.schema import crm_disclosure, crm_his_outbox, crm_outbox, crm_pseudonym


def forget_patient_links(conn: Connection, patient_id: str) -> None:
    """Drop the CRM outbox, disclosure log and pseudonym links of an erased patient (restore path)."""
    for table in (crm_outbox, crm_disclosure, crm_pseudonym):
        conn.execute(delete(table).where(table.c.patient_id == patient_id))


class CrmProcessors:
    def __init__(
        self,
        keys: KeyStore,
        wake_dispatcher: Callable[[], None],
        config: Callable[[], ProjectionConfig] | None = None,
    ) -> None:
        self.keys = keys
        self._wake_dispatcher = wake_dispatcher
        self._config = config

    def disclosed_fields(self, processor_id: str, kind: str) -> list[str]:
        """The fields of ``kind`` (patient, appointment, encounter) this CRM receives (the access letter)."""
        if self._config is None:
            return []
        client = self._config().clients.get(processor_id)
        return sorted(client.fields.get(kind, frozenset())) if client is not None else []

    def linked(self, conn: Connection, patient_id: str) -> list[str]:
        rows = conn.execute(
            select(crm_pseudonym.c.crm_id).where(crm_pseudonym.c.patient_id == patient_id).distinct()
        ).all()
        return sorted(str(r[0]) for r in rows)

    def subject(self, processor_id: str, patient_id: str) -> str:
        return self.keys.pseudonym(processor_id, patient_id)

    def erase(
        self,
        conn: Connection,
        patient_id: str,
        *,
        appointment_ids: Sequence[str],
        retained: Sequence[dict[str, str]],
    ) -> None:
        """``patient.erased`` to every CRM, links purged (:func:`emit_patient_erased`), bookings shredded."""
        emit_patient_erased(conn, self.keys, patient_id, retained=retained)
        _shred_booking_messages(conn, appointment_ids)

    def wake(self) -> None:
        self._wake_dispatcher()


def _shred_booking_messages(conn: Connection, appointment_ids: Sequence[str]) -> int:
    """Answered SIU^S12 booking messages (they carry the MRN) are emptied: nothing left to decrypt."""
    if not appointment_ids:
        return 0
    result = conn.execute(
        update(crm_his_outbox)
        .where(crm_his_outbox.c.appointment_id.in_(appointment_ids), crm_his_outbox.c.status != "pending")
        .values(message=b"")
    )
    return int(result.rowcount or 0)
