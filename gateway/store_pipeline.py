"""The store's hook chain, declared once: which hooks run, in which phase, in which order.

Why here: the gateway is the top layer and the only package that knows every
hook (``fhir_store.pipeline`` explains the phases).  The packages that own a
hook build it and hand it over (``CrmBridge.create``, ``TombstoneHook``,
``ScopePolicyHook``); none of them inserts anything into a store.  The
retention hold (``consent.retention.RetentionHoldHook``) holds no state, so it
is built here.
"""

from __future__ import annotations

from audit import AuditHook
from consent import ConsentIntakeHook, RetentionHoldHook, TombstoneHook
from crm_bridge import CrmOutboxHook
from fhir_store import HookPipeline
from gateway.auth.policy import ScopePolicyHook


def declare_pipeline(
    *,
    policy: ScopePolicyHook,
    intake: ConsentIntakeHook,
    audit: AuditHook,
    tombstones: TombstoneHook,
    outbox: CrmOutboxHook,
) -> HookPipeline:
    """THE order of the store hooks; every write and every read of every channel runs it.

    Writes (inside the write transaction, after the rows are written, before COMMIT):

    1. ``scope-policy`` (pre-commit): a REST change needs a granted SMART scope for
       each type it touches, also inside transaction Bundles; it refuses (rolls back)
       before anything else writes.  No-op for HL7, CRM and internal contexts.
    2. ``retention-hold`` (pre-commit): a ``delete`` of a medical record under legal
       hold is refused, 409 (Circular 33/2025/TT-BYT retention), on every channel.
       After the scope policy, so a client that may not delete learns nothing about
       a hold (a hold tells that the patient asked for erasure); before the stages
       that record or disclose the change.  It reads ``change.previous`` only.
    3. ``consent-intake`` (pre-commit): a Consent breaking the profile is refused
       before any hook records or discloses it.
    4. ``audit`` (group): the hash-chained AuditEvent of the change, in the same
       transaction (change and record commit together, IHE BALP).  It records the
       change as written, before the tombstone stage may relabel it.
    5. ``tombstone`` (group), **rewrites the resource**: a held resource of an erased
       patient gets the restricted label again (a second version, audited as
       ``erasure-hold-relabel``) and ``change.resource`` is replaced by the labelled
       content, so that the outbox below sees it restricted (Law 91/2025/QH15 Art. 14).
    6. ``crm-outbox`` (group): consent decisions and CRM change events; last, so it
       decides on what every earlier stage let through and labelled.

    Reads (after the rows are read, in the read's transaction):

    7. ``scope-policy`` (access): each disclosed type needs a read/search scope.
    8. ``audit`` (access): the access AuditEvent (possibly buffered).
    """
    return HookPipeline.of(
        ("scope-policy", "pre-commit", policy),
        ("retention-hold", "pre-commit", RetentionHoldHook()),
        ("consent-intake", "pre-commit", intake),
        ("audit", "group", audit),
        ("tombstone", "group", tombstones),
        ("crm-outbox", "group", outbox),
        ("scope-policy", "access", policy),
        ("audit", "access", audit),
    )
