"""The CRM bridge's public API: what the gateway may import (``from crm_bridge import ...``).

Everything else in the package is internal (import-linter ``protected``
contract in pyproject.toml); its tables are read by the functions of
``crm_bridge.status``, not by SQL in other packages.
"""

from __future__ import annotations

from crm_bridge.booking import (
    HisAnswer,
)
from crm_bridge.bridge import (
    CrmBridge,
)
from crm_bridge.config import (
    EVENT_TYPES,
    ProjectionConfig,
)
from crm_bridge.delivery import (
    SIGNATURE_HEADER,
    read_feed,
    verify_signature,
)
from crm_bridge.feed_start import (
    ensure_registered,
    feed_start,
    grant_backlog,
    register_feed,
)
from crm_bridge.field_keys import (
    field_keys_in_use,
    rewrap_fields,
    rows_under_old_keys,
)
from crm_bridge.outbox import (
    resolve_pseudonym,
    rotate_pseudonyms,
)
from crm_bridge.outbox_hook import (
    CrmOutboxHook,
)
from crm_bridge.processors import (
    forget_patient_links,
)
from crm_bridge.registration import (
    register as register_crm,
)
from crm_bridge.rejection import (
    err3_code as his_error_code,
)
from crm_bridge.status import (
    HIS_OPEN_STATUSES,
    dead_letter_counts,
    his_outbox_counts,
    outbox_head,
    outbox_heads,
    outbox_size,
    patient_disclosures,
    subscribed_crm_ids,
    subscription_cursors,
    webhook_backlogs,
)
from crm_bridge.webhook_policy import (
    WebhookPolicy,
)

__all__ = [
    "EVENT_TYPES",
    "HIS_OPEN_STATUSES",
    "SIGNATURE_HEADER",
    "CrmBridge",
    "CrmOutboxHook",
    "HisAnswer",
    "ProjectionConfig",
    "WebhookPolicy",
    "dead_letter_counts",
    "ensure_registered",
    "feed_start",
    "field_keys_in_use",
    "forget_patient_links",
    "grant_backlog",
    "his_error_code",
    "his_outbox_counts",
    "outbox_head",
    "outbox_heads",
    "outbox_size",
    "patient_disclosures",
    "read_feed",
    "register_crm",
    "register_feed",
    "resolve_pseudonym",
    "rewrap_fields",
    "rotate_pseudonyms",
    "rows_under_old_keys",
    "subscribed_crm_ids",
    "subscription_cursors",
    "verify_signature",
    "webhook_backlogs",
]
