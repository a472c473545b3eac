"""Patients' rights: erasure, access, rectification, restriction and objection requests (issue #6).

Legal frame: Decree 356/2025/ND-CP Art. 5 (deadlines), Law 91/2025/QH15
Art. 14 (erasure reaches processors and states what is retained), Circular
33/2025/TT-BYT and Circular 13/2025/TT-BYT (formerly 46/2018) (medical
records retained under legal hold).  See docs/patient-rights.md.

:func:`build_rights` wires the workflow into a runtime (``gateway.runtime``): the
processors to notify on erasure are injected (:mod:`consent.rights.processors`),
so this package never imports ``crm_bridge``.  The :class:`TombstoneHook` is
placed by the gateway's declared hook chain (``gateway.store_pipeline``), before
the CRM outbox hook.
"""

from __future__ import annotations

from typing import Any

from common import PrivacySettings
from consent.rights.calendar import ManualClock, SystemClock, WorkingCalendar
from consent.rights.deps import RightsDeps
from consent.rights.processors import Processors
from consent.rights.service import RightsService
from consent.rights.tombstones import TombstoneHook, ensure_file
from fhir_store import FhirStore

__all__ = [
    "ManualClock",
    "Processors",
    "RightsDeps",
    "RightsService",
    "SystemClock",
    "TombstoneHook",
    "WorkingCalendar",
    "build_rights",
]


def build_rights(
    store: FhirStore,
    settings: PrivacySettings,
    audit: Any | None,
    *,
    processors: Processors | None = None,
) -> RightsService:
    """Create the service (its store hook, :class:`TombstoneHook`, is built by the gateway).

    ``settings`` is the ``privacy`` group of the settings tree (tombstone file, holidays).

    ``processors`` is whoever received patients (the CRM bridge), notified on erasure.
    """
    ensure_file(settings.tombstone_path)  # from now on, a missing file is a lost one (restore refuses)
    deps = RightsDeps(
        store=store,
        audit=audit,
        processors=processors,
        calendar=WorkingCalendar.load(settings.holidays_file),
        tombstone_path=settings.tombstone_path,
    )
    return RightsService(deps)
