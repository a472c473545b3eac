"""The message browser's domain: search the journal, read one message, reprocess (issue #19).

Why here and not in the console routes: the same rules answer the page, a bulk
reprocess of a search result and the tests -- what a filter means (a patient
record number or CCCD goes through the blind index, then the audit trail's
``hl7-<journal id>`` request ids), what a message page may show (raw HL7 only
when the caller says the person may see it), and that reprocessing goes through
the one replay path (:meth:`gateway.ingest.Ingestor.replay`, as
``carebridge hl7 replay``) and reports before and after.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from sqlalchemy import Connection

from audit import RecordedChange, changes_of_request, journal_ids_of_patients
from fhir_store import (
    JournalQuery,
    JournalSummary,
    for_reading,
    journal_error_groups,
    journal_ids_matching,
    journal_load,
    journal_summary,
    patients_by_identifier,
    search_journal,
)
from gateway.hl7_fields import SegmentRow, decode, segment_table
from gateway.hl7_senders import peek_sender
from gateway.ingest import Ingestor
from gateway.logging_setup import get_logger
from gateway.runtime import Runtime

log = get_logger("carebridge.console")
PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class SearchResult:
    rows: list[JournalSummary]
    total: int
    patient_ids: tuple[str, ...] = ()  # the patients a record-number/CCCD filter found


@dataclass(frozen=True, slots=True)
class MessageView:
    summary: JournalSummary
    changes: list[RecordedChange]
    patient_ids: tuple[str, ...]
    segments: list[SegmentRow] | None = None  # only when raw HL7 may be shown
    ack: list[SegmentRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Reprocessed:
    """One message's before and after: journal status, ACK code, the resource versions it wrote."""

    journal_id: int
    status_before: str
    ack_before: str | None
    status_after: str
    ack_after: str | None
    error: str | None
    versions_before: tuple[str, ...]
    versions_after: tuple[str, ...]  # written by this reprocess
    patient_ids: tuple[str, ...] = ()  # the patients its effects name, before or after


def _patients(changes: list[RecordedChange]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c.patient_id for c in changes if c.patient_id))


class MessageBrowser:
    """One per console; stateless apart from the runtime."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def _read(self) -> Connection:
        return for_reading(self.runtime.engine).connect()

    def query_ids(self, patient: str) -> tuple[set[int] | None, tuple[str, ...]]:
        """The journal ids a patient filter allows (None: no filter) and the patients it found."""
        if not patient.strip():
            return None, ()
        with self._read() as conn:
            found = tuple(patients_by_identifier(conn, self.runtime.store.cipher, patient))
            return journal_ids_of_patients(conn, found), found

    def search(self, query: JournalQuery, *, patient: str = "", page: int = 1) -> SearchResult:
        ids, patients = self.query_ids(patient)
        if ids is not None:
            query = replace(query, ids=ids)
        with self._read() as conn:
            rows, total = search_journal(conn, query, limit=PAGE_SIZE, offset=(max(page, 1) - 1) * PAGE_SIZE)
        return SearchResult(rows, total, patients)

    def error_groups(self, query: JournalQuery) -> list[tuple[str, str, int]]:
        with self._read() as conn:
            return journal_error_groups(conn, query)

    def matching_ids(self, query: JournalQuery, *, patient: str = "") -> list[int]:
        ids, _ = self.query_ids(patient)
        if ids is not None:
            query = replace(query, ids=ids)
        with self._read() as conn:
            return journal_ids_matching(conn, query)

    def changes(self, summary: JournalSummary) -> list[RecordedChange]:
        with self._read() as conn:
            return changes_of_request(conn, f"hl7-{summary.id}", since_us=summary.received_us)

    def view(self, journal_id: int, *, raw: bool) -> MessageView | None:
        """A message's metadata, ACK and effects; its decoded segments only when ``raw``."""
        with self._read() as conn:
            summary = journal_summary(conn, journal_id)
        if summary is None:
            return None
        changes = self.changes(summary)
        segments: list[SegmentRow] | None = None
        ack: list[SegmentRow] = []
        entry = journal_load(self.runtime.engine, journal_id, self.runtime.store.cipher)
        if entry is not None:
            if entry.ack:
                ack = segment_table(decode(bytes(entry.ack), "utf-8"))
            if raw:
                charset = self._ingestor().default_charset(*peek_sender(entry.raw))
                segments = segment_table(decode(entry.raw, charset))
        return MessageView(summary, changes, _patients(changes), segments, ack)

    def _ingestor(self) -> Ingestor:
        # a fresh sender directory: a charset set a moment ago applies now
        return Ingestor(self.runtime.store, self.runtime.settings, metrics=self.runtime.hl7_counters)

    def reprocess(self, journal_ids: list[int]) -> list[Reprocessed]:
        """Replay each message through the ingest's replay path, oldest first; before and after of each."""
        ingestor = self._ingestor()
        done: list[Reprocessed] = []
        for journal_id in sorted(set(journal_ids)):
            with self._read() as conn:
                before = journal_summary(conn, journal_id)
            if before is None:
                continue
            earlier = self.changes(before)
            last_seq = max((c.seq for c in earlier), default=0)
            outcome = ingestor.replay(journal_id)
            later = [c for c in self.changes(before) if c.seq > last_seq]
            done.append(
                Reprocessed(
                    journal_id,
                    before.status,
                    before.ack_code,
                    outcome.status,
                    outcome.ack_code,
                    outcome.error,
                    tuple(c.entity for c in earlier if c.entity),
                    tuple(c.entity for c in later if c.entity),
                    _patients(earlier + later),
                )
            )
        return done
