"""Consent and patients' rights: what the other packages may import (``from consent import ...``).

Everything else in the package, ``consent.rights`` included, is internal
(import-linter ``protected`` contract in pyproject.toml); the rights workflow's
public names are re-exported here.  :class:`PrivacyClockCollector` is resolved
on first use (PEP 562): it loads ``prometheus_client``, which the command line
does not need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from consent.grants import (
    MAX_GRANT_AGE_US,
    check_grant,
)
from consent.keys import (
    ENV_KEYS,
    RELOAD_EVERY_S,
    KeyMaterialError,
    KeyStore,
)
from consent.pdp import (
    ConsentRecord,
    Decision,
    DecisionAuditor,
    DecisionSession,
    PolicyDecisionPoint,
)
from consent.purposes import (
    APPOINTMENT_REMINDER,
    CHANNELS,
    MARKETING,
    POST_VISIT_CARE,
    PURPOSE_SYSTEM,
    PURPOSES,
    ConsentIntakeHook,
    build_consent,
    consent_patient,
    security_labels,
)
from consent.registration import (
    register as register_consent,
)
from consent.retention import (
    RetentionHoldHook,
)
from consent.rights import (
    ManualClock,
    Processors,
    RightsDeps,
    RightsService,
    SystemClock,
    TombstoneHook,
    WorkingCalendar,
    build_rights,
)
from consent.rights.letter import (
    PURPOSE_LABELS,
)
from consent.rights.model import (
    PrivacyRequest,
)
from consent.rights.response import (
    render_html,
)
from consent.rights.restore import (
    reapply as reapply_tombstones,
)
from consent.rights.restore import (
    reapply_requests as reapply_tombstone_requests,
)
from consent.rights.tombstones import (
    read_file as read_tombstone_file,
)
from consent.timeline import (
    ConsentStep,
    consent_step,
)

if TYPE_CHECKING:
    from consent.rights.metrics import PrivacyClockCollector


__all__ = [
    "APPOINTMENT_REMINDER",
    "CHANNELS",
    "ENV_KEYS",
    "MARKETING",
    "MAX_GRANT_AGE_US",
    "POST_VISIT_CARE",
    "PURPOSES",
    "PURPOSE_LABELS",
    "PURPOSE_SYSTEM",
    "RELOAD_EVERY_S",
    "ConsentIntakeHook",
    "ConsentRecord",
    "ConsentStep",
    "Decision",
    "DecisionAuditor",
    "DecisionSession",
    "KeyMaterialError",
    "KeyStore",
    "ManualClock",
    "PolicyDecisionPoint",
    "PrivacyClockCollector",
    "PrivacyRequest",
    "Processors",
    "RetentionHoldHook",
    "RightsDeps",
    "RightsService",
    "SystemClock",
    "TombstoneHook",
    "WorkingCalendar",
    "build_consent",
    "build_rights",
    "check_grant",
    "consent_patient",
    "consent_step",
    "read_tombstone_file",
    "reapply_tombstone_requests",
    "reapply_tombstones",
    "register_consent",
    "render_html",
    "security_labels",
]


def __getattr__(name: str) -> Any:
    """Resolve :class:`PrivacyClockCollector` on first use (PEP 562): it loads ``prometheus_client``."""
    if name == "PrivacyClockCollector":
        from consent.rights.metrics import PrivacyClockCollector

        return PrivacyClockCollector
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
