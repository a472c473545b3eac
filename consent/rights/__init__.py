"""Patients' rights: erasure, access, rectification, restriction and objection requests (issue #6).

Legal frame: Decree 356/2025/ND-CP Art. 5 (deadlines), Law 91/2025/QH15
Art. 14 (erasure reaches processors and states what is retained), Circular
33/2025/TT-BYT and Circular 13/2025/TT-BYT (formerly 46/2018) (medical
records retained under legal hold).  See docs/patient-rights.md.

:func:`build_rights` wires the workflow into a runtime: the tombstone hook goes
into the store's hook chain *before* the CRM outbox hook.
"""

from __future__ import annotations

from typing import Any

from consent.rights.calendar import ManualClock, SystemClock, WorkingCalendar
from consent.rights.deps import RightsDeps
from consent.rights.service import RightsService
from consent.rights.tombstones import TombstoneHook, tombstone_file
from fhir_store.repository import FhirStore

__all__ = [
    "ManualClock",
    "RightsDeps",
    "RightsService",
    "SystemClock",
    "TombstoneHook",
    "WorkingCalendar",
    "build_rights",
]


def _waker(crm: Any | None) -> Any | None:
    wake = getattr(getattr(crm, "dispatcher", None), "wake", None)
    return None if wake is None else wake.set


def build_rights(
    store: FhirStore, extra: dict[str, str], audit: Any | None, crm: Any | None
) -> RightsService:
    """Create the service and hook the tombstone check into ``store`` (before the CRM outbox hook)."""
    hook = TombstoneHook(audit.writer if audit is not None else None, cipher=store.cipher)
    crm_hook = getattr(crm, "hook", None)
    index = store.hooks.index(crm_hook) if crm_hook in store.hooks else len(store.hooks)
    store.hooks.insert(index, hook)
    deps = RightsDeps(
        store=store,
        audit=audit,
        keys=getattr(crm, "keys", None),
        wake_dispatcher=_waker(crm),
        tombstone_path=tombstone_file(extra),
    )
    return RightsService(deps)
