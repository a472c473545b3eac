"""The one write path: validated operations, applied with their hooks in one transaction, retried on races.

Why a module of its own: this is where REST and HL7 meet (docs/architecture.md
"One write path"), and its rules are the ones a change must not break —
validation before any SQL, hooks (audit, outbox) inside the same transaction,
retries on write races only, and group commit whose answers equal one
transaction per request.  :class:`fhir_store.repository.FhirStore` exposes
these as ``transact`` / ``transact_group``; the read side stays there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from common import SearchSettings, VersionConflict
from fhir_store.content_cipher import StoreCipher
from fhir_store.event_order import event_order
from fhir_store.model import Operation, OperationResult, RequestContext, ResourceChange
from fhir_store.pipeline import HookPipeline
from fhir_store.transaction import apply_operations
from fhir_store.validation import validate_resource
from fhir_store.writer import PendingRows

MAX_WRITE_ATTEMPTS = 8

ContextSource = RequestContext | Callable[[Connection], RequestContext]
"""A context, or a function run first in the transaction that returns it (see :func:`transact`)."""

Extra = Callable[[Connection, list[OperationResult]], None]


@dataclass(frozen=True, slots=True)
class WriteUnit:
    """One request's operations inside :func:`transact_group`."""

    ops: list[Operation]
    context: ContextSource
    extra: Extra | None = None


class WriteTarget(Protocol):
    """What the write path needs of the store (``FhirStore`` provides it)."""

    cipher: StoreCipher
    pipeline: HookPipeline
    clock: Callable[[], int]
    limits: SearchSettings

    def write_connection(self) -> AbstractContextManager[Connection]: ...


def flags_duplicates(context: RequestContext) -> bool:
    """Whether a shared CCCD/BHYT is tagged as a possible duplicate rather than refused.

    The HL7 channel reports registrations the HIS already made (ADT^A40 fixes
    duplicates later), so refusing loses data; a REST client gets 409 and can correct.
    """
    return context.channel == "hl7"


def _validate(ops: Sequence[Operation]) -> None:
    for op in ops:
        resource = getattr(op, "resource", None)
        if isinstance(resource, dict):
            validate_resource(resource)


def transact(
    store: WriteTarget,
    ops: list[Operation],
    context: ContextSource,
    *,
    validate: bool = True,
    extra: Extra | None = None,
) -> list[OperationResult]:
    """Apply ``ops`` atomically; retry on write races (unique or version conflicts).

    ``context`` may be a function run first in each attempt's transaction that
    returns the context: the HL7 ingest writes its journal row there, so the row
    (whose id names the request) commits together with the message's effects.
    ``extra`` runs in the same transaction after the writes (e.g. a journal status).
    """
    if validate:
        _validate(ops)
    last_error: Exception | None = None
    identifier_conflicts = 0
    optimistic = True
    for _attempt in range(MAX_WRITE_ATTEMPTS):
        try:
            with store.write_connection() as conn:
                acting = context(conn) if callable(context) else context
                results, changes = apply_operations(
                    conn,
                    ops,
                    store.clock(),
                    cipher=store.cipher,
                    optimistic_claims=optimistic,
                    flag_duplicates=flags_duplicates(acting),
                    event=event_order(acting),
                    limits=store.limits,
                )
                if changes:
                    store.pipeline.on_changes(conn, changes, acting)
                if extra is not None:
                    extra(conn, results)
            return results
        except IntegrityError as exc:
            optimistic = False  # retry with explicit owner checks: a duplicate gets a readable error
            last_error = exc
        except VersionConflict as exc:
            # A concurrent commit may have claimed the identifier after we resolved the
            # conditional criteria: re-resolving then finds it.  A second identical failure
            # is a genuine duplicate and is reported as such.
            if (exc.location or "").endswith(".identifier"):
                identifier_conflicts += 1
                if identifier_conflicts > 1:
                    raise
            last_error = exc
        except DBAPIError as exc:  # serialization failure / deadlock on PostgreSQL
            if getattr(exc.orig, "sqlstate", None) not in ("40001", "40P01"):
                raise
            last_error = exc
    raise VersionConflict(f"write kept conflicting with concurrent writes: {type(last_error).__name__}")


def transact_group(
    store: WriteTarget, units: Sequence[WriteUnit], *, validate: bool = True
) -> list[list[OperationResult]]:
    """Apply several independent requests in ONE transaction (group commit), in order.

    Why: a durable commit is the costliest statement of a small write, and an HL7
    feed on several connections delivers many small independent messages at once;
    one commit for all of them is PostgreSQL's group commit done by the caller.
    Each unit gets its own context, hooks (audit, outbox) and ``extra`` as in
    :func:`transact`, so the rows written are the same as one transaction each;
    what changes is that they are sent together: the units' rows go out in one
    statement after the last unit (reads of a resource or identifier an earlier
    unit wrote see it: ``fhir_store.transaction`` flushes or consults the pending
    rows), then each stage of the store's pipeline sees every unit's changes, in
    unit order, once (``group`` phase) or unit by unit (``pre-commit``), then the extras.

    All or nothing and no retries: any error rolls back every unit and is raised,
    and the caller falls back to :func:`transact` per unit, which retries and
    reports errors unit by unit.
    """
    if validate:
        for unit in units:
            _validate(unit.ops)
    out: list[list[OperationResult]] = []
    batches: list[tuple[Sequence[ResourceChange], RequestContext]] = []
    with store.write_connection() as conn:
        pending = PendingRows(check_claims=False)
        for unit in units:
            acting = unit.context(conn) if callable(unit.context) else unit.context
            results, changes = apply_operations(
                conn,
                unit.ops,
                store.clock(),
                cipher=store.cipher,
                optimistic_claims=True,
                pending=pending,
                flag_duplicates=flags_duplicates(acting),
                event=event_order(acting),
                limits=store.limits,
            )
            out.append(results)
            if changes:
                batches.append((changes, acting))
        pending.flush(conn)  # every unit's rows in one statement
        store.pipeline.on_group_changes(conn, batches)
        for unit, results in zip(units, out, strict=True):
            if unit.extra is not None:
                unit.extra(conn, results)
    return out
