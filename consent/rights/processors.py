"""What the rights workflow needs from the processors that received a patient (the CRM bridge).

Why a protocol on this side: ``crm_bridge`` depends on ``consent`` (keys,
decision point, purposes), so ``consent`` must not import ``crm_bridge`` —
that would close a cycle and tie the legal workflow to one processor's tables.
The gateway, which wires both, hands :func:`consent.rights.build_rights` an
implementation (``crm_bridge.processors.CrmProcessors``); without one (no
processor configured) an erasure simply has nobody to notify.

Law 91/2025/QH15 Art. 14: erasure reaches every processor that received the
patient, each must confirm, and the links that let a pseudonym be resolved are
destroyed (ISO/IEC 27001:2022 A.8.10).

An implementation may also offer ``disclosed_fields(processor_id, kind) ->
list[str]`` (the fields of a patient/appointment/encounter that processor
receives): the access letter names them (``consent.rights.letter``), and says
"not recorded" when it is absent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import Connection


class Processors(Protocol):
    def linked(self, conn: Connection, patient_id: str) -> list[str]:
        """Ids of the processors holding a link to the patient, sorted and distinct ([] when none)."""
        ...

    def subject(self, processor_id: str, patient_id: str) -> str:
        """The pseudonym the processor knows the patient by (its deletion receipt names it)."""
        ...

    def erase(
        self,
        conn: Connection,
        patient_id: str,
        *,
        appointment_ids: Sequence[str],
        retained: Sequence[dict[str, str]],
    ) -> None:
        """In the erasure's transaction: notify every linked processor and destroy what links the
        patient to them (pseudonym links, disclosure state, queued events, sealed messages about
        ``appointment_ids``).  ``retained`` tells the processors what carebridge keeps and why."""
        ...

    def wake(self) -> None:
        """After the erasure committed: deliver the notices now rather than at the next poll."""
        ...
