"""The audit trail's public API: what the other packages may import (``from audit import ...``).

Everything else in the package is internal (import-linter ``protected``
contract in pyproject.toml); the audit tables are read by the functions of
``audit.status`` and ``audit.export``, not by SQL in other packages.
"""

from __future__ import annotations

from audit.anchors import (
    Anchor,
    Anchorer,
    AnchorError,
    read_anchors,
)
from audit.checkpoints import (
    AuditKeys,
    VerifyKey,
)
from audit.codes import (
    DCM_SYSTEM,
    SERIOUS_FAILURE,
    SUCCESS,
)
from audit.events import (
    SUBTYPE_SYSTEM,
    Target,
    build_event,
    coding,
    export_event,
    outcome_for_status,
    rest_event,
)
from audit.export import (
    AuditFilter,
    search_audit,
)
from audit.export import (
    export as export_audit,
)
from audit.hooks import (
    AuditHook,
    patient_refs,
)
from audit.message_links import (
    RecordedChange,
    changes_of_request,
    journal_ids_of_patients,
)
from audit.registration import (
    register as register_audit,
)
from audit.review import (
    AccessEntry,
    TrailCheck,
    patient_accesses,
    verify_with_anchors,
)
from audit.status import (
    chain_length,
    last_checkpoint,
    stored_event,
)
from audit.verify import (
    VerifyResult,
    verify_engine,
)

__all__ = [
    "DCM_SYSTEM",
    "SERIOUS_FAILURE",
    "SUBTYPE_SYSTEM",
    "SUCCESS",
    "AccessEntry",
    "Anchor",
    "AnchorError",
    "Anchorer",
    "AuditFilter",
    "AuditHook",
    "AuditKeys",
    "RecordedChange",
    "Target",
    "TrailCheck",
    "VerifyKey",
    "VerifyResult",
    "build_event",
    "chain_length",
    "changes_of_request",
    "coding",
    "export_audit",
    "export_event",
    "journal_ids_of_patients",
    "last_checkpoint",
    "outcome_for_status",
    "patient_accesses",
    "patient_refs",
    "read_anchors",
    "register_audit",
    "rest_event",
    "search_audit",
    "stored_event",
    "verify_engine",
    "verify_with_anchors",
]
