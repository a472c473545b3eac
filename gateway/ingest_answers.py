"""How the HL7 ingest answers a message it does not simply apply: refused, failed, duplicate, transient, stale.

Why a module of its own: :mod:`gateway.ingest` holds the order of effects of one
message (journal, map, store transaction, ACK); the answers here decide what is
journaled, audited, counted and logged when that order stops early, and they are
the same for the listener, ``carebridge hl7 replay`` and the tests.  HL7 v2.5
ch. 2.9 (acknowledgment modes) and table 0357 (error codes) are the references;
the journal statuses are :mod:`fhir_store`'s.  Log lines carry journal ids,
codes and counts, never patient data.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from sqlalchemy import Connection, Engine

from audit import AuditHook
from common import CarebridgeError
from fhir_store import (
    JOURNAL_FAILED,
    JOURNAL_PROCESSED,
    JOURNAL_RECEIVED,
    JOURNAL_REJECTED,
    JOURNAL_STALE,
    FhirStore,
    JournalEntry,
    OperationResult,
    journal_find_duplicate,
    journal_insert_message_entry,
    journal_mark_failed,
    journal_mark_retryable,
    journal_mark_stale,
    stale_notes,
    transient_kind,
)
from gateway.hl7_senders import NOT_CHECKED
from gateway.ingest_model import (
    Inbound,
    Outcome,
    acks_wanted,
    journal_fields,
    note_reuse,
    record,
    render_ack,
    reuse_action,
    settled,
)
from gateway.ingest_transient import DuplicateAudit, TemporaryFailure
from gateway.logging_setup import get_logger
from gateway.metrics import Hl7Counters, message_type_label
from gateway.settings import Settings
from mappers import commit_ack_code

log = get_logger("carebridge.ingest")
_SENDER_PART = re.compile(r"^[A-Za-z0-9_.\-]{1,60}$")


def sender_label(inbound: Inbound) -> str:
    """MSH-3^MSH-4 for logs when both look like system ids (never free text from the wire)."""
    header = inbound.header
    if header is None:
        return "unknown"
    parts = (header.sending_application, header.sending_facility)
    return "^".join(p if _SENDER_PART.match(p) else "?" for p in parts)


class IngestAnswers:
    """The answers of :class:`gateway.ingest.Ingestor` other than "applied" (its base class)."""

    store: FhirStore
    engine: Engine
    settings: Settings
    metrics: Hl7Counters
    strict: bool
    duplicate_audit: DuplicateAudit

    # -- ACK rendering ---------------------------------------------------------------------

    def _ack(self, inbound: Inbound, code: str, error: CarebridgeError | None = None) -> bytes:
        return render_ack(inbound, code, error, strict=self.strict)

    def _wanted(self, inbound: Inbound, success: bool) -> tuple[bool, bool]:
        return acks_wanted(inbound, success, strict=self.strict)

    def _existing(self, inbound: Inbound) -> JournalEntry:
        """The journal row a duplicate delivery collided with."""
        fields = journal_fields(inbound)
        existing = journal_find_duplicate(
            self.engine,
            fields["sending_application"],
            fields["sending_facility"],
            fields["control_id"],
            self.store.cipher,
            fields["content"],
        )
        if existing is None:  # pragma: no cover - the row cannot vanish
            raise RuntimeError("journal conflict without a row")
        return existing

    def answered(self, inbound: Inbound, outcome: Outcome, started: float) -> None:
        """Count the answer and write the one INFO line per message an operator reads (issue #19 item 3).

        Journal id, sender, type, status, ACK code and milliseconds: never patient data.
        """
        mtype = message_type_label(inbound.header)
        self.metrics.answered(mtype, outcome.ack_code)
        log.info(
            "hl7 message",
            journal_id=outcome.journal_id,
            sender=sender_label(inbound),
            message_type=mtype,
            status="duplicate" if outcome.duplicate else outcome.status,
            ack_code=outcome.ack_code,
            ms=round((time.monotonic() - started) * 1000, 1),
        )

    # -- answers other than applied ---------------------------------------------------------

    def _held_back(self, conn: Connection, journal_id: int, results: list[OperationResult]) -> list[str]:
        """In the store transaction: mark the row ``stale`` when writes were held back as older."""
        notes = stale_notes(results)
        if notes:
            journal_mark_stale(conn, journal_id, "; ".join(notes))
        return notes

    def _settled_status(self, inbound: Inbound, journal_id: int, stale: list[str]) -> str:
        """After the commit: ``stale`` is counted and logged (ids and times only, never patient data)."""
        if not stale:
            return JOURNAL_PROCESSED
        self.metrics.stale(message_type_label(inbound.header))
        log.info("hl7 message older than stored state", journal_id=journal_id, held_back=len(stale))
        return JOURNAL_STALE

    def _transient(
        self, inbound: Inbound, journal_id: int | None, kind: str, *, journal: bool = True
    ) -> Outcome:
        """AE for an environmental failure, not stored as final: the row waits ``received`` for the resend.

        The row is written (or its attempt noted) if the database allows it now and
        ``journal`` (a message that would be applied); if not, the resend journals it afresh.
        """
        error = TemporaryFailure(kind)
        note = f"waiting: temporary database failure ({kind})"
        try:
            if journal_id is None and journal:
                inserted = journal_insert_message_entry(
                    self.engine, **journal_fields(inbound), error=note, cipher=self.store.cipher
                )
                journal_id = None if inserted is None else inserted.id
            elif journal_id is not None:
                journal_mark_retryable(self.engine, journal_id, note)
        except Exception as exc:  # still failing: nothing is stored, the resend starts afresh
            log.info("hl7 journal unavailable", kind=transient_kind(exc) or type(exc).__name__)
        self.metrics.transient(kind)
        log.warning("hl7 message not applied: temporary database failure", journal_id=journal_id, kind=kind)
        _, application = self._wanted(inbound, success=False)
        ack = self._ack(inbound, "AE", error)
        return Outcome([ack] if application else [], "AE", journal_id, JOURNAL_RECEIVED, error=str(error))

    def _fail(self, inbound: Inbound, journal_id: int, error: CarebridgeError) -> Outcome:
        code = error.hl7_ack if error.hl7_ack in ("AE", "AR") else "AE"
        status = JOURNAL_REJECTED if code == "AR" else JOURNAL_FAILED
        ack = self._ack(inbound, code, error)
        journal_mark_failed(self.engine, journal_id, status=status, ack_code=code, ack=ack, error=str(error))
        self._record(inbound, journal_id, code)
        log.info(
            "hl7 message not applied", journal_id=journal_id, ack_code=code, error_code=error.hl7_error_code
        )
        _, application = self._wanted(inbound, success=False)
        return Outcome([ack] if application else [], code, journal_id, status, error=str(error))

    def _reject(
        self, inbound: Inbound, error: CarebridgeError, on_commit: Callable[[bytes], None] | None
    ) -> Outcome:
        """Journal a message that is not applied in one step: refused (AE/AR) or ignored (AA)."""
        code, status = settled(error)
        ack = self._ack(inbound, code, error)
        fields = journal_fields(inbound)
        if str(error).startswith(NOT_CHECKED):
            # the registry could not be read: the resend must be checked again, not answered from here
            fields["dedup"] = False
        inserted = journal_insert_message_entry(
            self.engine,
            **fields,
            status=status,
            ack_code=code,
            ack=ack,
            error=str(error),
            cipher=self.store.cipher,
        )
        journal_id = None if inserted is None else inserted.id
        if inserted is None:
            existing = self._existing(inbound)
            if existing.ack is not None:
                return self._duplicate(inbound, existing, on_commit)
        elif inserted.reused:
            self._reused(inbound, inserted.id)
        self._record(inbound, journal_id, code)
        log.info(
            "hl7 message ignored" if code == "AA" else "hl7 message rejected",
            journal_id=journal_id,
            ack_code=code,
            error_code=error.hl7_error_code,
        )
        commit = self._wanted(inbound, success=code != "AR")[0]
        application = self._wanted(inbound, success=code == "AA")[1]
        if commit and on_commit is not None:
            commit_code = commit_ack_code(code)
            on_commit(self._ack(inbound, commit_code, error if commit_code == "CR" else None))
        return Outcome([ack] if application else [], code, journal_id, status, error=str(error))

    def _duplicate(
        self, inbound: Inbound, existing: JournalEntry, on_commit: Callable[[bytes], None] | None
    ) -> Outcome:
        assert existing.ack is not None
        self.metrics.duplicate()
        deliveries = self.duplicate_audit.admit(existing.id)
        if deliveries is not None:  # one event (and log line) per message per interval, with the count
            self._record(inbound, existing.id, existing.ack_code or "AE", deliveries)
            log.info(
                "hl7 duplicate delivery",
                journal_id=existing.id,
                ack_code=existing.ack_code,
                deliveries=deliveries,
            )
        success = existing.ack_code == "AA"
        commit, application = self._wanted(inbound, success=success)
        if commit and on_commit is not None:
            on_commit(self._ack(inbound, "CA"))
        return Outcome(
            [existing.ack] if application else [],
            existing.ack_code or "AE",
            existing.id,
            existing.status,
            duplicate=True,
            error=existing.error,
        )

    # -- reused control ids ----------------------------------------------------------------

    def reuse_action(self, inbound: Inbound) -> str:
        return reuse_action(self.settings.hl7, inbound)

    def _reused(self, inbound: Inbound, journal_id: int) -> str:
        return note_reuse(self.settings.hl7, self.metrics, inbound, journal_id)

    # -- audit ---------------------------------------------------------------------------

    def _audit(self) -> AuditHook | None:
        """The audit stage of the store's pipeline (found, not injected: every runtime declares one)."""
        return self.store.pipeline.find(AuditHook)

    def _record(self, inbound: Inbound, journal_id: int | None, ack_code: str, deliveries: int = 1) -> None:
        """The message's own AuditEvent, outside the store (refused or duplicate messages)."""
        audit = self._audit()
        if audit is None:
            return
        try:
            record(audit, inbound, journal_id, ack_code, deliveries=deliveries)
        except Exception as exc:  # the ACK must still go out; the journal row has the message
            log.error("hl7 audit event not written", journal_id=journal_id, error_type=type(exc).__name__)
