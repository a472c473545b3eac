"""Erasure tombstones and the store hook that keeps erased patients away from the CRM.

Why (Law 91/2025/QH15 Art. 14; Circular 33/2025/TT-BYT): after an erasure the
clinical record stays under legal hold, so the HIS keeps sending messages about
the patient.  Those messages must update the clinical record but must never
re-create the patient in the CRM.  Two mechanisms make sure of it:

* every retained Patient/Encounter/Appointment of the patient carries the
  ``meta.security`` label ``R`` (restricted, v3-Confidentiality) and a legal-hold
  tag (the labels and the retention rule: ``consent.retention``); the consent
  decision point never discloses an ``R`` or held resource (``consent.pdp``:
  restricted labels win), and a held resource is never deleted;
* a new HIS message replaces the whole resource (and so its ``meta``):
  :class:`TombstoneHook` runs inside that very write transaction, before the
  CRM outbox hook, finds the tombstone by hash (patient id or any HIS
  identifier, so even a message creating a *new* Patient id is caught),
  writes the labelled version and labels the change the outbox hook sees.

A tombstone holds only keyed hashes (HMAC-SHA256 under the store's blind-index
key, ``StoreCipher.tombstone_hashes``), the request id, the date, the scope
(sealed) and the legal basis — no personal data.  Why keyed: a plain SHA-256
of a 12-digit CCCD or a record number is reversed by trying every number.
Tombstones written before (unkeyed SHA-256, 64 hex digits) still match: the
lookup also computes those legacy hashes.  Tombstones are also
appended to a JSON-lines file outside the database (``CAREBRIDGE_PRIVACY_TOMBSTONE_FILE``)
so that restoring an older backup re-applies them (``gateway.backup``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from audit import Target, build_event, patient_refs
from consent.retention import is_held, is_record_type, is_restricted, with_hold_labels, with_restricted_label
from consent.rights.schema import privacy_tombstone
from fhir_store import (
    Amend,
    DriverQuery,
    OperationResult,
    RequestContext,
    ResourceChange,
    StoreCipher,
    load_current,
    now_us,
    write_version,
)


def _legacy_hash(subject: str) -> str:
    """The unkeyed SHA-256 tombstones had before they were keyed (still matched, never written)."""
    return hashlib.sha256(f"carebridge-tombstone\x00{subject}".encode()).hexdigest()


def _subjects(resource: dict[str, Any]) -> list[tuple[str, str]]:
    """(subject, kind): ``Patient/<id>`` and each ``system|value`` identifier of the patient."""
    if resource.get("resourceType") == "Patient":
        out = [(f"Patient/{resource.get('id') or ''}", "patient")]
        for ident in resource.get("identifier") or []:
            if ident.get("system") and ident.get("value"):
                out.append((f"{ident['system']}|{ident['value']}", "identifier"))
        return out
    return [(f"Patient/{pid}", "patient") for pid in patient_refs(resource)]


def subject_hashes(resource: dict[str, Any], cipher: StoreCipher) -> list[tuple[str, str]]:
    """(hash, kind) pairs naming the patient ``resource`` is about, as a new tombstone stores them."""
    return [(cipher.tombstone_hashes(subject)[0], kind) for subject, kind in _subjects(resource)]


def lookup_hashes(resource: dict[str, Any], cipher: StoreCipher) -> list[str]:
    """Every hash a tombstone of this patient may be stored under (every blind key held, legacy)."""
    out: list[str] = []
    for subject, _kind in _subjects(resource):
        out += cipher.tombstone_hashes(subject)
        out.append(_legacy_hash(subject))
    return out


def relabel(resource_type: str, resource_id: str, *, hold: bool = True) -> Amend:
    """The store operation labelling a resource R (and legal hold when ``hold``).

    Applied by ``FhirStore.transact`` like every write, so the new version goes
    through the store's hook chain (audit event, CRM outbox decision) -- security
    labels are content, so a label change makes a version.  The current version
    is read inside the write transaction (:class:`~fhir_store.model.Amend`): a
    message the HIS sent meanwhile is kept, not overwritten.  An already
    labelled resource is left as it is (result ``unchanged``).
    """
    return Amend(resource_type, resource_id, with_hold_labels if hold else with_restricted_label)


def relabelled_version(result: OperationResult) -> int | None:
    """The version a :func:`relabel` operation wrote; None when it had nothing to label."""
    if result.status != 200 or result.message is not None or result.stored is None:
        return None
    return result.stored.version_id


# Checked for every HL7 message and REST write: on the driver cursor (fhir_store.driver_sql).
_TOMBSTONED: dict[int, DriverQuery] = {}


def tombstoned(conn: Connection, hashes: Iterable[str]) -> set[str]:
    wanted = sorted(set(hashes))
    if not wanted:
        return set()
    query = _TOMBSTONED.get(len(wanted))
    if query is None:  # one statement text per list length (a message has a handful of identifiers)
        marks = ", ".join(f":h{n}" for n in range(len(wanted)))
        query = DriverQuery(
            f"SELECT subject_hash FROM {privacy_tombstone.name} WHERE subject_hash IN ({marks})"
        )
        _TOMBSTONED[len(wanted)] = query
    rows = query.all(conn, {f"h{n}": value for n, value in enumerate(wanted)})
    return {str(r[0]) for r in rows}


def _candidates(changes: Sequence[ResourceChange]) -> list[ResourceChange]:
    """Written medical-record resources lacking the R label or the legal-hold tag.

    Either missing is enough: a write that kept ``R`` but dropped the hold tag
    must not make a held record deletable (``consent.retention.RetentionHoldHook``).
    """
    return [
        c
        for c in changes
        if is_record_type(c.resource_type)
        and c.resource is not None
        and not (is_restricted(c.resource) and is_held(c.resource))
    ]


class TombstoneHook:
    """StoreHook (group phase): re-applies the restricted label to held resources of erased patients.

    Contract for the stages after it: it **rewrites** ``change.resource`` in place
    (labels and the labelled version's ``meta``), so it must run before the CRM
    outbox stage, which then sees the resource restricted
    (``gateway.store_pipeline.declare_pipeline``).  The labelled version is
    written here, inside the same transaction, and audited as
    ``erasure-hold-relabel``; stages before it saw the unlabelled version.
    """

    rewrites_resource = True  # read by fhir_store.pipeline: later stages see the labelled resource

    def __init__(self, audit_writer: Any | None = None, *, cipher: StoreCipher) -> None:
        self.audit_writer = audit_writer
        self.cipher = cipher  # the store's: this hook writes versions itself

    def on_group_changes(
        self, conn: Connection, batches: Sequence[tuple[Sequence[ResourceChange], RequestContext]]
    ) -> None:
        """One tombstone query for a group commit; only a group with a hit goes unit by unit."""
        hashes = [
            h
            for changes, _ in batches
            for c in _candidates(changes)
            for h in lookup_hashes(c.resource or {}, self.cipher)
        ]
        if hashes and tombstoned(conn, hashes):
            for changes, context in batches:
                self.on_changes(conn, changes, context)

    def on_changes(
        self, conn: Connection, changes: Sequence[ResourceChange], context: RequestContext
    ) -> None:
        candidates = _candidates(changes)
        if not candidates:
            return
        by_change = {id(c): lookup_hashes(c.resource or {}, self.cipher) for c in candidates}
        hits = tombstoned(conn, (h for hs in by_change.values() for h in hs))
        if not hits:
            return
        now = now_us()
        events = []
        for change in candidates:
            if not hits.intersection(by_change[id(change)]):
                continue
            resource = change.resource
            assert resource is not None
            with_hold_labels(resource)
            previous = load_current(conn, change.resource_type, change.id, self.cipher)
            stored = write_version(
                conn, change.resource_type, change.id, resource, previous, now, cipher=self.cipher
            )
            resource["meta"] = stored.resource().get("meta", resource["meta"])
            events.append(
                build_event(
                    context=context,
                    event_type="rest",
                    subtype="erasure-hold-relabel",
                    action="U",
                    outcome_desc="restricted label re-applied to a held resource of an erased patient",
                    targets=[Target(change.resource_type, change.id, stored.version_id)],
                    patient_ids=[change.id] if change.resource_type == "Patient" else patient_refs(resource),
                    recorded_us=now,
                )
            )
        if events and self.audit_writer is not None:
            self.audit_writer.append(conn, events)


def append_to_file(path: Path, records: Sequence[dict[str, Any]]) -> None:
    """Append tombstones (hashes only) durably to the file kept outside the database."""
    if not records:
        return
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # var/: owner only
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def ensure_file(path: Path) -> None:
    """Create the (empty) tombstone file if it is missing, so that a missing file means a lost one.

    ``carebridge restore`` refuses to run without it (``gateway.backup``): a restore that
    cannot see the erasures made after its backup would bring erased patients back.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))


def read_file(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            out.append(json.loads(line))
    return out
