"""Value types of the store: stored versions, write operations, results, hook protocol.

The store knows these and nothing of HTTP or HL7: the gateway translates REST
requests and mapped HL7 messages into the same :class:`Operation` list and the
same :meth:`FhirStore.transact` call, so both channels share one write path.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import orjson
from sqlalchemy import Connection


@dataclass(frozen=True)
class RequestContext:
    """Who is acting, through which channel: carried to hooks (audit, outbox)."""

    request_id: str
    client_id: str = "system"
    role: str = "system"
    channel: Literal["rest", "hl7", "internal", "crm"] = "internal"
    source_address: str | None = None
    purpose_of_use: str | None = None
    # When set, the caller may only see these patients' compartments (SMART patient/ scopes):
    # searches are narrowed and reads outside the compartment are refused by the store.
    patient_ids: tuple[str, ...] = ()
    # Opaque authorization grants (e.g. SMART scopes) for policy hooks; the store ignores them.
    grants: tuple[str, ...] = ()
    # HL7 v2: the message's event time (EVN-2/EVN-6/MSH-7, UTC microseconds); an older
    # message does not overwrite newer state (fhir_store.event_order).  None: no ordering.
    event_time_us: int | None = None


@dataclass(frozen=True)
class StoredResource:
    """One stored version exactly as persisted (``content`` are the served bytes)."""

    resource_type: str
    id: str
    version_id: int
    last_updated_us: int
    deleted: bool
    content: bytes | None

    @property
    def etag(self) -> str:
        return f'W/"{self.version_id}"'

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"

    def resource(self) -> dict[str, Any]:
        if self.content is None:
            return {}
        parsed: dict[str, Any] = orjson.loads(self.content)
        return parsed


@dataclass
class Create:
    resource: dict[str, Any]
    if_none_exist: str | None = None
    full_url: str | None = None


@dataclass
class Update:
    resource_type: str
    id: str
    resource: dict[str, Any]
    if_match: str | None = None
    full_url: str | None = None


@dataclass
class ConditionalUpdate:
    resource_type: str
    criteria: str
    resource: dict[str, Any]
    full_url: str | None = None


@dataclass
class Delete:
    resource_type: str
    id: str


@dataclass
class ConditionalDelete:
    resource_type: str
    criteria: str


@dataclass
class MergePatients:
    """Patient merge (HL7 ADT^A40, FHIR R5 ``Patient/$merge`` semantics).

    ``source`` is the duplicate that goes away (inactive, ``replaced-by``),
    ``target`` the survivor (``replaces``); the source's Encounters and
    Appointments are repointed to the target.
    """

    source_identifier: tuple[str, str]
    target_identifier: tuple[str, str]


@dataclass
class UnlinkPatients:
    """Undo a Patient link pair (HL7 ADT^A37): both records lose their links to each other.

    A record that was ``replaced-by`` the other becomes active again.  Parameters
    ``patient-identifier`` and ``other-patient-identifier`` (carebridge's
    ``Patient/$unlink``; FHIR defines no unlink operation).
    """

    first_identifier: tuple[str, str]
    second_identifier: tuple[str, str]


@dataclass
class Amend:
    """An internal read-modify-write of the current version, decided inside the transaction.

    ``change`` receives the current resource (a copy) and returns the content to
    store; returning it unchanged writes nothing (the usual no-op rule).  Why: a
    server-side change of an existing record (a security label under legal hold)
    must take the one write path -- hooks, audit, outbox -- yet must not overwrite
    a version written meanwhile, so the read happens in the write transaction.
    A missing or deleted resource is left alone (status 404).  Not validated:
    only trusted internal callers build it.
    """

    resource_type: str
    id: str
    change: Callable[[dict[str, Any]], dict[str, Any]]


Operation = (
    Create | Update | ConditionalUpdate | Delete | ConditionalDelete | MergePatients | UnlinkPatients | Amend
)


@dataclass
class OperationResult:
    """Outcome of one operation: FHIR status code and the resulting version."""

    status: int
    stored: StoredResource | None = None
    message: str | None = None


ChangeAction = Literal["create", "update", "delete"]


@dataclass(frozen=True)
class ResourceChange:
    action: ChangeAction
    resource_type: str
    id: str
    version_id: int
    last_updated_us: int
    resource: dict[str, Any] | None
    previous: dict[str, Any] | None = field(default=None, compare=False)


class StoreHook(Protocol):
    """Called inside the write transaction, after the resources are written.

    Audit and outbox hooks write their rows on ``conn`` so that a change and its
    audit record / change event commit or roll back together.  Hooks run in the
    order the store's :class:`~fhir_store.pipeline.HookPipeline` declares; a hook
    that changes ``ResourceChange.resource`` for the hooks after it declares the
    class attribute ``rewrites_resource = True``.
    """

    def on_changes(
        self, conn: Connection, changes: Sequence[ResourceChange], context: RequestContext
    ) -> None: ...


@runtime_checkable
class GroupStoreHook(StoreHook, Protocol):
    """A store hook that handles a group commit's units in one call (``FhirStore.transact_group``).

    Why: a hook that writes rows (the audit chain: lock, head, insert) or asks the
    database something (tombstones) per call would otherwise do it once per unit;
    the group's units are independent requests whose changes it may take together.
    ``batches`` holds each unit's changes with its context, in unit order (units
    without changes are left out); the result must equal ``on_changes`` per unit.
    """

    def on_group_changes(
        self, conn: Connection, batches: Sequence[tuple[Sequence[ResourceChange], RequestContext]]
    ) -> None: ...


class AccessHook(Protocol):
    """Called for reads and searches (audit of access, not only of change)."""

    def on_access(
        self,
        conn: Connection,
        action: Literal["read", "vread", "search", "history"],
        resources: Sequence[StoredResource],
        context: RequestContext,
        query: str | None,
    ) -> None: ...
