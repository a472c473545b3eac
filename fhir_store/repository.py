"""The FHIR store facade: the one entry point for reads, searches and writes.

REST and HL7 both call :meth:`FhirStore.transact`; the stages of its
:class:`~fhir_store.pipeline.HookPipeline` (scope policy, audit, outbox, ...)
run inside the same database transaction (the
write path itself, retries and group commit, is ``fhir_store.write_path``).  The
``cipher`` (``fhir_store.content_cipher``) seals what is written and opens what
is read: every :class:`StoredResource` leaving the store carries plaintext.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from sqlalchemy import Connection, Engine, bindparam, select

from common import Forbidden, Gone, NotFound, SearchSettings
from fhir_store import write_path
from fhir_store.blind_index import blind_query, blind_query_text
from fhir_store.blind_text import matches_strings, needs_recheck
from fhir_store.compartment import check_compartment, conceal, in_compartment, restrict_to_compartment
from fhir_store.content_cipher import StoreCipher
from fhir_store.database import writer
from fhir_store.instants import now_us
from fhir_store.model import Operation, OperationResult, RequestContext, StoredResource
from fhir_store.pipeline import HookPipeline
from fhir_store.resolve import identifier_lookup
from fhir_store.schema import resource_current, resource_version
from fhir_store.search import SearchQuery, count_matches, find_ids, referenced_ids, referencing_ids
from fhir_store.search_limits import is_statement_timeout, timeout_error, translate_timeout
from fhir_store.search_snapshots import SNAPSHOT_LIMIT, binding, load_snapshot, save_snapshot
from fhir_store.transient import WriteHealth
from fhir_store.write_path import ContextSource, Extra, WriteUnit
from fhir_store.writer import load_current

_LOAD_MANY = select(
    resource_current.c.res_id,
    resource_current.c.version,
    resource_current.c.last_updated_us,
    resource_current.c.content,
).where(
    resource_current.c.res_type == bindparam("t"),
    resource_current.c.res_id.in_(bindparam("ids", expanding=True)),
    resource_current.c.deleted.is_(False),
)


@dataclass
class SearchPage:
    matches: list[StoredResource]
    included: list[StoredResource] = field(default_factory=list)
    total: int | None = None
    offset: int = 0
    count: int = 20
    has_next: bool = False
    page_token: str | None = None


class FhirStore:
    def __init__(
        self,
        engine: Engine,
        pipeline: HookPipeline | None = None,
        clock: Callable[[], int] = now_us,
        *,
        cipher: StoreCipher,
        read_autocommit: bool = False,
        read_engine: Engine | None = None,
        limits: SearchSettings | None = None,
        write_timeout_ms: int = 0,
    ) -> None:
        self.engine = engine
        self.cipher = cipher
        # Reads, histories and searches run on their own pool (with a statement timeout on
        # PostgreSQL, gateway.runtime), so costly searches cannot take the connections HL7
        # ingest writes with (issue #17).  Without one, they share ``engine``.
        self.read_engine = read_engine if read_engine is not None else engine
        self.limits = limits if limits is not None else SearchSettings()
        # PostgreSQL cancels any statement of a write transaction past this (0: none); the HL7
        # channel treats it as transient (fhir_store.transient), REST answers 503 ``timeout``
        self.write_timeout_ms = write_timeout_ms
        self._write_timeout_sql = (
            f"SET LOCAL statement_timeout = {int(write_timeout_ms):d}"
            if write_timeout_ms > 0 and engine.dialect.name == "postgresql"
            else None
        )
        # Reads by id need no transaction when no access hook writes in it: on PostgreSQL that
        # saves the BEGIN and COMMIT round trips of every read (SQLite keeps its own BEGIN).
        self._reader = (
            self.read_engine.execution_options(isolation_level="AUTOCOMMIT")
            if read_autocommit and self.read_engine.dialect.name != "sqlite"
            else self.read_engine
        )
        # The hook chain, declared in one place by whoever wires the store (``gateway.store_pipeline``).
        self.pipeline = pipeline if pipeline is not None else HookPipeline()
        self.clock = clock
        # the last committed write and the last environmental write failure, for /readyz
        self.write_health = WriteHealth()

    # -- transactions -------------------------------------------------------

    @contextmanager
    def write_connection(self) -> Iterator[Connection]:
        """A write transaction; on SQLite the lock is taken at BEGIN (IMMEDIATE)."""
        try:
            with writer(self.engine).begin() as conn:
                if self._write_timeout_sql is not None:
                    conn.exec_driver_sql(self._write_timeout_sql)
                yield conn
        except BaseException as exc:
            self.write_health.failed(exc)  # only environmental failures are remembered
            if is_statement_timeout(exc):
                raise timeout_error(self.write_timeout_ms, "store_write_statement_timeout_ms") from None
            raise
        self.write_health.succeeded()

    def transact(
        self,
        ops: list[Operation],
        context: ContextSource,
        *,
        validate: bool = True,
        extra: Extra | None = None,
    ) -> list[OperationResult]:
        """Apply ``ops`` atomically, retrying write races (``fhir_store.write_path.transact``)."""
        return write_path.transact(self, ops, context, validate=validate, extra=extra)

    def transact_group(
        self, units: Sequence[WriteUnit], *, validate: bool = True
    ) -> list[list[OperationResult]]:
        """Several requests in one transaction (group commit: ``fhir_store.write_path.transact_group``)."""
        return write_path.transact_group(self, units, validate=validate)

    # -- reads ----------------------------------------------------------------

    def _access(
        self,
        conn: Connection,
        action: Literal["read", "vread", "search", "history"],
        resources: Sequence[StoredResource],
        context: RequestContext | None,
        query: str | None = None,
    ) -> None:
        if context is not None:
            self.pipeline.on_access(conn, action, resources, context, query)

    @contextmanager
    def _read_connection(self) -> Iterator[Connection]:
        with translate_timeout(self.limits.statement_timeout_ms), self._reader.begin() as conn:
            yield conn

    def read(
        self, resource_type: str, resource_id: str, context: RequestContext | None = None
    ) -> StoredResource:
        unknown = NotFound(f"{resource_type}/{resource_id} is not known", location=f"{resource_type}.id")
        with self._read_connection() as conn:
            stored = load_current(conn, resource_type, resource_id, self.cipher)
            if stored is None:
                raise unknown
            if stored.deleted:
                self._check_owner(conn, resource_type, resource_id, context, unknown)
                raise Gone(f"{resource_type}/{resource_id} was deleted", location=f"{resource_type}.id")
            if context is not None and context.patient_ids:
                check_compartment(stored.resource(), context.patient_ids, unknown)
            self._access(conn, "read", [stored], context)
            return stored

    def vread(
        self, resource_type: str, resource_id: str, version_id: int, context: RequestContext | None = None
    ) -> StoredResource:
        with self._read_connection() as conn:
            row = conn.execute(
                select(
                    resource_version.c.last_updated_us, resource_version.c.deleted, resource_version.c.content
                ).where(
                    resource_version.c.res_type == resource_type,
                    resource_version.c.res_id == resource_id,
                    resource_version.c.version == version_id,
                )
            ).first()
            unknown = NotFound(f"{resource_type}/{resource_id}/_history/{version_id} is not known")
            if row is None:
                raise unknown
            stored = self._stored(resource_type, resource_id, version_id, row[0], row[1], row[2])
            if stored.deleted:
                self._check_owner(conn, resource_type, resource_id, context, unknown)
                raise Gone(f"{resource_type}/{resource_id} version {version_id} is a deletion")
            if context is not None and context.patient_ids:
                check_compartment(stored.resource(), context.patient_ids, unknown)
            self._access(conn, "vread", [stored], context)
            return stored

    def history(
        self,
        resource_type: str | None = None,
        resource_id: str | None = None,
        *,
        since_us: int | None = None,
        count: int = 100,
        before_seq: int | None = None,
        context: RequestContext | None = None,
    ) -> tuple[list[tuple[StoredResource, str, int]], bool]:
        """Versions newest first as (version, method, seq); second value: more exist."""
        rv = resource_version
        stmt = select(
            rv.c.seq,
            rv.c.res_type,
            rv.c.res_id,
            rv.c.version,
            rv.c.last_updated_us,
            rv.c.deleted,
            rv.c.content,
            rv.c.method,
        )
        if resource_type is not None:
            stmt = stmt.where(rv.c.res_type == resource_type)
        if resource_id is not None:
            stmt = stmt.where(rv.c.res_id == resource_id)
        if since_us is not None:
            stmt = stmt.where(rv.c.last_updated_us >= since_us)
        if before_seq is not None:
            stmt = stmt.where(rv.c.seq < before_seq)
        stmt = stmt.order_by(rv.c.seq.desc()).limit(count + 1)
        unknown = NotFound(f"{resource_type}/{resource_id} is not known")
        with translate_timeout(self.limits.statement_timeout_ms), self.read_engine.begin() as conn:
            rows = conn.execute(stmt).all()
            if resource_id is not None and not rows and before_seq is None:
                raise unknown
            entries = [(self._stored(*r[1:7]), str(r[7]), int(r[0])) for r in rows[:count]]
            if context is not None and context.patient_ids:
                if resource_type is None or resource_id is None:
                    raise Forbidden("type and system history are not available in a patient context")
                if entries:  # who owns it now, even when this page holds only deletions
                    self._check_owner(conn, resource_type, resource_id, context, unknown)
                for entry in entries:
                    if entry[0].content is not None:
                        check_compartment(entry[0].resource(), context.patient_ids, unknown)
            self._access(conn, "history", [e[0] for e in entries], context)
        return entries, len(rows) > count

    def _check_owner(
        self,
        conn: Connection,
        resource_type: str,
        resource_id: str,
        context: RequestContext | None,
        unknown: NotFound,
    ) -> None:
        """Conceal a resource whose newest content is outside a patient caller's compartment.

        Used where the answer would otherwise say "it exists" without showing content
        (410 for a deletion, a history page of deletions): the last version that had
        content says whose it was.
        """
        if context is None or not context.patient_ids:
            return
        rv = resource_version
        row = conn.execute(
            select(rv.c.version, rv.c.last_updated_us, rv.c.content)
            .where(rv.c.res_type == resource_type, rv.c.res_id == resource_id, rv.c.content.is_not(None))
            .order_by(rv.c.version.desc())
            .limit(1)
        ).first()
        if row is None:
            raise conceal(unknown)
        last = self._stored(resource_type, resource_id, row[0], row[1], False, row[2])
        check_compartment(last.resource(), context.patient_ids, unknown)

    def load_many(self, conn: Connection, resource_type: str, ids: Sequence[str]) -> list[StoredResource]:
        """Current, non-deleted versions of ``ids`` in the order given (missing ones skipped)."""
        if not ids:
            return []
        rows = conn.execute(_LOAD_MANY, {"t": resource_type, "ids": list(ids)}).all()
        by_id = {str(r[0]): self._stored(resource_type, str(r[0]), r[1], r[2], False, r[3]) for r in rows}
        return [by_id[i] for i in ids if i in by_id]

    def _stored(
        self, kind: str, res_id: str, version: int, updated: int, deleted: bool, content: bytes | None
    ) -> StoredResource:
        """A row as served: ``content`` opened (sealed at rest; None for a deletion)."""
        opened = None if content is None else self.cipher.open_resource(kind, res_id, version, content)
        return StoredResource(kind, res_id, version, updated, bool(deleted), opened)

    def search(
        self, query: SearchQuery, context: RequestContext | None = None, query_text: str | None = None
    ) -> SearchPage:
        query = blind_query(query, self.cipher.blind)  # identifier/telecom values are indexed as keyed hashes
        confined = context is not None and bool(context.patient_ids)
        if confined:
            assert context is not None
            query = restrict_to_compartment(query, context.patient_ids)

        def bound_to() -> str:  # only paged searches need it (one HMAC)
            return binding(query, context, self.cipher.blind)

        with translate_timeout(self.limits.statement_timeout_ms), self.read_engine.begin() as conn:
            page = self._search(conn, query, bound_to)
            if confined:
                # Every page is confined again, frozen ones included: a resource may have left
                # the compartment (a merge repoints visits) since its snapshot was taken.
                assert context is not None
                page.matches = [r for r in page.matches if in_compartment(r.resource(), context.patient_ids)]
                page.included = [
                    r for r in page.included if in_compartment(r.resource(), context.patient_ids)
                ]
            if query_text:
                query_text = blind_query_text(query.resource_type, query_text, self.cipher.blind)
            self._access(conn, "search", page.matches + page.included, context, query_text)
        return page

    def _search(self, conn: Connection, query: SearchQuery, bound_to: Callable[[], str]) -> SearchPage:
        total: int | None = None
        rechecked = needs_recheck(query)
        if query.summary == "count":
            total = len(self._rechecked(conn, query)) if rechecked else count_matches(conn, query)
            return SearchPage([], total=total, count=0)
        if query.page_token:
            ids, total = load_snapshot(conn, query, bound_to())
            page_ids = ids[query.offset : query.offset + query.count]
            has_next = query.offset + query.count < len(ids)
            token: str | None = query.page_token
        elif (owned := identifier_lookup(conn, query)) is not None:
            # identifier=system|value is answered by the unique claim table: at most one match.
            page_ids, has_next, token, total = owned[: query.count], False, None, len(owned)
        elif rechecked:
            every = self._rechecked(conn, query)
            page_ids = every[query.offset : query.offset + query.count]
            has_next = query.offset + query.count < len(every)
            token = None
            if has_next:
                token = save_snapshot(self.engine, query.resource_type, every, self.clock(), bound_to())
            total = len(every)
        else:
            page_ids = find_ids(conn, query, limit=query.count + 1, offset=query.offset)
            has_next = len(page_ids) > query.count
            page_ids = page_ids[: query.count]
            token = None
            if has_next:
                all_ids = find_ids(conn, query, limit=SNAPSHOT_LIMIT, offset=0)
                token = save_snapshot(self.engine, query.resource_type, all_ids, self.clock(), bound_to())
                total = len(all_ids) if len(all_ids) < SNAPSHOT_LIMIT else None
            elif query.offset == 0:
                total = len(page_ids)
            if query.total == "accurate" and total is None:
                total = count_matches(conn, query)
        matches = self.load_many(conn, query.resource_type, page_ids)
        included: list[StoredResource] = []
        for source_type, param, target_type in query.includes:
            if source_type == query.resource_type:
                targets = referenced_ids(conn, source_type, [m.id for m in matches], param)
                included += self.load_many(
                    conn, target_type, sorted({i for t, i in targets if t == target_type})
                )
        for source_type, param, target_type in query.revincludes:
            source_ids = referencing_ids(conn, source_type, param, target_type, [m.id for m in matches])
            included += self.load_many(conn, source_type, source_ids)
        unique_included = list({r.reference: r for r in included}.values())
        return SearchPage(matches, unique_included, total, query.offset, query.count, has_next, token)

    def _rechecked(self, conn: Connection, query: SearchQuery) -> list[str]:
        """Ids matching a search whose long name/address values the hashes only narrowed down.

        The candidates' content is decrypted and the string filters applied to it
        (``fhir_store.blind_text``): answers stay exact although the index holds
        only keyed prefixes up to ``PREFIX_MAX`` characters and keyed 3-grams.
        """
        candidates = self.load_many(conn, query.resource_type, find_ids(conn, query, limit=SNAPSHOT_LIMIT))
        return [c.id for c in candidates if matches_strings(c.resource(), query)]

    def everything(self, patient_id: str, context: RequestContext | None = None) -> list[StoredResource]:
        """Patient compartment subset we hold: the Patient, its Encounters and Appointments."""
        unknown = NotFound(f"Patient/{patient_id} is not known", location="Patient.id")
        if context is not None and context.patient_ids and patient_id not in context.patient_ids:
            raise conceal(unknown)  # before any lookup: 404, 410 and 403 would each say something
        with self._read_connection() as conn:
            patients = self.load_many(conn, "Patient", [patient_id])
            if not patients:
                current = conn.execute(
                    select(resource_current.c.deleted).where(
                        resource_current.c.res_type == "Patient", resource_current.c.res_id == patient_id
                    )
                ).first()
                if current is not None:
                    raise Gone(f"Patient/{patient_id} was deleted")
                raise unknown
            result = list(patients)
            for res_type, param in (("Encounter", "subject"), ("Appointment", "actor")):
                ids = referencing_ids(conn, res_type, param, "Patient", [patient_id])
                result += self.load_many(conn, res_type, ids)
            self._access(conn, "read", result, context, "$everything")
            return result
