"""Applying a list of operations atomically: resolve, rewrite references, write.

FHIR transaction rules (https://hl7.org/fhir/R4/http.html#trules): conditional
entries are resolved first, ``urn:uuid:`` full URLs are mapped to the ids they
resolve to and every reference is rewritten, then writes run in the order
DELETE, POST, PUT (and our Patient merge last).  Any failure raises and the
caller rolls the whole database transaction back.

The store's :class:`~fhir_store.content_cipher.StoreCipher` is passed down to
every read and write: conditional criteria and merge identifiers are blinded
before they are looked up, content is opened and sealed by the writer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from common import InvalidInput, PreconditionFailed, SearchSettings
from fhir_store.content_cipher import StoreCipher
from fhir_store.duplicates import DuplicateCheck, check_patient, tag_partner
from fhir_store.event_order import (
    EventOrder,
    EventStamp,
    Key,
    is_older,
    load_stamps,
    predates_merge,
    save_stamps,
    stale_note,
)
from fhir_store.model import (
    Amend,
    ChangeAction,
    ConditionalDelete,
    ConditionalUpdate,
    Create,
    Delete,
    MergePatients,
    Operation,
    OperationResult,
    ResourceChange,
    StoredResource,
    UnlinkPatients,
    Update,
)
from fhir_store.patient_links import as_retired, keep_links, onto_survivor
from fhir_store.patient_merge import merge_patients, unlink_patients
from fhir_store.references import rewrite_references, without_meta
from fhir_store.resolve import Prefetch, if_match_version, load, single, survivor
from fhir_store.search import DEFAULT_LIMITS
from fhir_store.writer import PendingRows, write_version


@dataclass
class _Planned:
    op: Operation
    resource_type: str
    target_id: str | None  # None: nothing to do (conditional create matched, delete of nothing)
    previous: StoredResource | None
    resource: dict[str, Any] | None
    status_if_noop: int = 200
    retired_write: bool = False  # a message from before a merge, written to the merged record


def _plan(
    conn: Connection,
    op: Operation,
    url_map: dict[str, str],
    cipher: StoreCipher,
    pending: PendingRows,
    event: EventOrder | None = None,
    limits: SearchSettings = DEFAULT_LIMITS,
) -> _Planned:
    """What ``op`` will do, read from the database and from ``pending`` (rows not yet sent)."""
    prefetch = Prefetch(cipher)  # lives for this step only: nothing is written before its _load
    if isinstance(op, Create):
        resource_type = str(op.resource.get("resourceType"))
        target: str | None = str(uuid.uuid4())
        previous = None
        if op.if_none_exist:
            existing = single(conn, resource_type, op.if_none_exist, cipher, pending, prefetch, limits)
            if existing is not None and resource_type == "Patient":
                existing, _ = survivor(conn, existing, cipher, pending, prefetch)
            if existing is not None:
                target, previous = None, load(conn, resource_type, existing, cipher, pending, prefetch)
                if op.full_url:
                    url_map[op.full_url] = f"{resource_type}/{existing}"
        if op.full_url and target is not None:
            url_map[op.full_url] = f"{resource_type}/{target}"
        return _Planned(op, resource_type, target, previous, op.resource)
    if isinstance(op, Update | ConditionalUpdate):
        resource_type = op.resource_type
        if str(op.resource.get("resourceType")) != resource_type:
            raise InvalidInput(
                f"resourceType '{op.resource.get('resourceType')}' does not match the URL ({resource_type})",
                location="resourceType",
            )
        if isinstance(op, Update):
            target_id = op.id
            if op.resource.get("id") not in (None, op.id):
                raise InvalidInput("resource id does not match the URL id", location=f"{resource_type}.id")
        else:
            found = single(conn, resource_type, op.criteria, cipher, pending, prefetch, limits)
            retired: list[StoredResource] = []
            if found is not None and resource_type == "Patient":
                found, retired = survivor(conn, found, cipher, pending, prefetch)
            body_id = op.resource.get("id")
            if retired and body_id == retired[0].id:
                body_id = None
            if found is not None and body_id not in (None, found):
                raise InvalidInput(
                    "resource id does not match the resource found by the criteria", location="id"
                )
            target_id = found or str(body_id or uuid.uuid4())
        fresh = isinstance(op, ConditionalUpdate) and found is None and body_id is None
        previous = (
            None if fresh else load(conn, resource_type, target_id, cipher, pending, prefetch)
        )  # a new uuid has no row
        if isinstance(op, Update) and op.if_match is not None:
            wanted = if_match_version(op.if_match)
            if previous is None or previous.version_id != wanted:
                current = "none" if previous is None else previous.version_id
                raise PreconditionFailed(
                    f"If-Match version {wanted} does not match current version {current}", location="If-Match"
                )
        if op.full_url:
            url_map[op.full_url] = f"{resource_type}/{target_id}"
        resource = op.resource
        if isinstance(op, ConditionalUpdate) and retired and previous is not None:
            if event is not None and predates_merge(conn, retired[0].id, event):
                # the merged record's own history (fhir_store.event_order); references still
                # go to the survivor, as the merge moved everything that points at the patient
                return _Planned(
                    op, resource_type, retired[0].id, retired[0], as_retired(resource), retired_write=True
                )
            resource = onto_survivor(resource, previous.resource(), retired)
        return _Planned(op, resource_type, target_id, previous, resource)
    if isinstance(op, Delete | ConditionalDelete):
        found = (
            op.id
            if isinstance(op, Delete)
            else single(conn, op.resource_type, op.criteria, cipher, pending, prefetch, limits)
        )
        previous = None if found is None else load(conn, op.resource_type, found, cipher, pending, prefetch)
        if previous is None or previous.deleted:
            return _Planned(op, op.resource_type, None, previous, None, status_if_noop=204)
        return _Planned(op, op.resource_type, found, previous, None)
    if isinstance(op, Amend):
        previous = load(conn, op.resource_type, op.id, cipher, pending)
        if previous is None or previous.deleted:
            return _Planned(op, op.resource_type, None, None, None, status_if_noop=404)
        return _Planned(op, op.resource_type, op.id, previous, op.change(previous.resource()))
    return _Planned(op, "Patient", None, None, None)


_ORDER = {
    Delete: 0,
    ConditionalDelete: 0,
    Create: 1,
    Update: 2,
    ConditionalUpdate: 2,
    Amend: 2,
    MergePatients: 3,
    UnlinkPatients: 4,
}


def apply_operations(
    conn: Connection,
    ops: list[Operation],
    now_us: int,
    *,
    cipher: StoreCipher,
    optimistic_claims: bool = False,
    pending: PendingRows | None = None,
    flag_duplicates: bool = False,
    event: EventOrder | None = None,
    limits: SearchSettings = DEFAULT_LIMITS,
) -> tuple[list[OperationResult], list[ResourceChange]]:
    """Apply ``ops`` in the caller's transaction; (one result per op, the changes written).

    ``flag_duplicates`` (the HL7 channel): a Patient whose CCCD/BHYT already belongs
    to another Patient is written and both are tagged (``fhir_store.duplicates``)
    instead of the write being refused; and a Patient update keeps the links
    (merges) it does not carry, since an HIS knows nothing of FHIR links.
    ``event`` (an HL7 message's event time): a conditional update older than the
    event that last set its resource is held back, its result's message saying so
    (``fhir_store.event_order``); the others record the event time.  ``limits``: the
    server's search limits, which conditional criteria obey like any search.
    """
    shared = pending is not None  # the caller's rows (a group commit): it flushes them
    if pending is None:
        pending = PendingRows(check_claims=not optimistic_claims)
    url_map: dict[str, str] = {}
    plans = [_plan(conn, op, url_map, cipher, pending, event, limits) for op in ops]
    results: list[OperationResult | None] = [None] * len(ops)
    changes: list[ResourceChange] = []
    stamps = _stamps(conn, plans, event)
    stamped: list[Key] = []

    def apply(inner: list[Operation]) -> None:
        """Writes of a merge/unlink: a nested transaction step on the same connection."""
        changes.extend(apply_operations(conn, inner, now_us, cipher=cipher, limits=limits)[1])

    for index in sorted(range(len(ops)), key=lambda i: _ORDER[type(ops[i])]):
        plan = plans[index]
        if isinstance(plan.op, MergePatients):
            pending.flush(conn)  # the merge reads and rewrites what this transaction wrote
            results[index] = merge_patients(conn, plan.op, cipher, apply, rewrite_references, event)
            continue
        if isinstance(plan.op, UnlinkPatients):
            pending.flush(conn)
            results[index] = unlink_patients(conn, plan.op, cipher, apply)
            continue
        if plan.target_id is None:
            results[index] = OperationResult(plan.status_if_noop, plan.previous)
            continue
        if event is not None and isinstance(plan.op, ConditionalUpdate):
            key = (plan.resource_type, plan.target_id)
            stamp = stamps.get(key)
            if stamp is not None and is_older(stamp, event):
                results[index] = OperationResult(200, plan.previous, stale_note(*key, stamp))
                continue
            stamped.append(key)
        resource = None
        check = _NO_CHECK
        if plan.resource is not None:
            unresolved: list[str] = []
            resource = rewrite_references(plan.resource, url_map, unresolved)
            if unresolved:
                raise InvalidInput(
                    f"reference {unresolved[0]} does not match any fullUrl in the Bundle",
                    location="reference",
                )
            prev = plan.previous
            if flag_duplicates and plan.resource_type == "Patient" and prev is not None and not prev.deleted:
                resource = keep_links(resource, prev.resource())
            if flag_duplicates and plan.resource_type == "Patient" and not plan.retired_write:
                check = check_patient(conn, plan.target_id, resource, prev, cipher, pending)
                resource = check.resource
            if (
                prev is not None
                and not prev.deleted
                and without_meta(prev.resource()) == without_meta(resource)
            ):
                results[index] = OperationResult(200, prev, "unchanged")
                continue
        stored = write_version(
            conn,
            plan.resource_type,
            plan.target_id,
            resource,
            plan.previous,
            now_us,
            pending,
            cipher=cipher,
            unclaimed=check.unclaimed,
        )
        existed = plan.previous is not None and not plan.previous.deleted
        action: ChangeAction = "delete" if resource is None else ("update" if existed else "create")
        changes.append(
            ResourceChange(
                action,
                plan.resource_type,
                plan.target_id,
                stored.version_id,
                now_us,
                resource if resource is None else stored.resource(),
                plan.previous.resource() if existed and plan.previous else None,
            )
        )
        results[index] = OperationResult(200 if resource is None or existed else 201, stored)
        for partner in check.partners:
            tagging = tag_partner(conn, partner, now_us, cipher, pending)
            if tagging is not None:
                changes.append(tagging)
    if event is not None and stamped:
        save_stamps(conn, stamped, event)
    if not shared:
        pending.flush(conn)
    return [r if r is not None else OperationResult(500) for r in results], changes


def _stamps(conn: Connection, plans: list[_Planned], event: EventOrder | None) -> dict[Key, EventStamp]:
    """Stored event times of the existing resources ``plans`` set by conditional update (one query)."""
    if event is None:
        return {}
    keys = [
        (p.resource_type, p.target_id)
        for p in plans
        if isinstance(p.op, ConditionalUpdate) and p.target_id is not None and p.previous is not None
    ]
    return load_stamps(conn, keys)


_NO_CHECK = DuplicateCheck({})
