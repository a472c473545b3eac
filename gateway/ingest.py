"""HL7 v2 ingest: journal → map → store transaction → ACK (the domain service behind MLLP).

The MLLP listener only turns bytes into :meth:`Ingestor.handle` calls and ACK
bytes back into frames; everything with a meaning lives here so that the
listener, ``carebridge hl7 replay`` and the tests share one path.

Order of effects for one message (commit-acknowledge, HL7 v2.5 ch. 2.9):

1. :meth:`Ingestor.prepare` (no I/O but the sender registry's periodic reload):
   tokenize with the sender's default charset, refuse what breaks a receiver rule
   (NUL, empty MSH-10, segment and repetition limits: :mod:`mappers.hl7_limits`),
   check that MSH-3/MSH-4 is a
   registered sender on this connection (:mod:`gateway.hl7_senders`; before any
   journal or duplicate lookup, so a forged message is never answered from the
   journal) and the TLS sender allow-list, map to a FHIR transaction Bundle
   and compute the patient key used for ordering.  Errors are carried.
2. A message refused by step 1 is journaled ``failed`` (AE) / ``rejected``
   (AR) together with its ACK, and answered.
3. Otherwise (no commit ACK wanted, the usual case) one store transaction
   holds the journal row -- inserted ``processed`` with the AA it will send --
   and the message's resources, audit and outbox rows (:meth:`write_unit`):
   the raw bytes are durable before the ACK leaves, with one commit.  A
   unique (MSH-3, MSH-4, MSH-10, content digest) makes a duplicate delivery
   visible: its *stored* ACK is returned and nothing is written.  The same
   sender and MSH-10 with other content is a reused control id: journaled as
   its own row and processed, or refused with AE (per sender,
   ``CAREBRIDGE_HL7_CONTROL_ID_REUSE``); counted and logged either way.  A
   sender refused by step 1 is never matched with a journaled message.  A store error rolls it
   all back and the row is journaled ``failed``/``rejected`` with its AE/AR;
   anything unexpected becomes AE 207 (HL7 table 0357).  A failure of the
   environment (connection, disk full, serialization, timeout) is retried, then
   answered AE without being stored as final: the row stays ``received`` and the
   resend applies it (:mod:`gateway.ingest_transient`).
4. When MSH-15 asks for a commit ACK, the row is committed ``received`` first,
   the CA is sent, then the message is applied and the row marked in that
   transaction (:meth:`apply`, also the replay path).  A ``received`` row left
   by a crash is completed by the sender's retry or ``carebridge hl7 replay``.

Audit (IHE BALP import, DICOM 110107): every message leaves an AuditEvent
whose agent is the sender (TLS identity or MSH-3) and whose job entity is the
control id -- never patient data.  An applied message that changed resources
is recorded by the store's audit hook (one import event per changed resource,
request id ``hl7-<journal id>``, same transaction); an AA that changed
nothing (identical A08) gets one message event in its transaction; refused
messages get one right after their journal write, duplicate deliveries one per
message per ``CAREBRIDGE_HL7_DUPLICATE_AUDIT_INTERVAL_S`` carrying their count.
ACK modes: see :mod:`gateway.ingest_model`; the answers other than "applied" (refused,
failed, duplicate, transient, stale): :mod:`gateway.ingest_answers`.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection

from common import CarebridgeError, Forbidden, UnparseableMessage
from fhir_store import (
    JOURNAL_FINAL_STATUSES,
    JOURNAL_PROCESSED,
    FhirStore,
    JournalEntry,
    Operation,
    OperationResult,
    ReadEntry,
    RequestContext,
    WriteUnit,
    bundle_operations,
    journal_insert_entry,
    journal_insert_message_entry,
    journal_load,
    journal_mark_failed,
    journal_mark_processed,
    transient_kind,
)
from gateway.hl7_senders import (
    NOT_ALLOWED,
    NOT_CHECKED,
    SenderLookup,
    SenderNotRegistered,
    SenderPolicy,
    SenderWithdrawn,
    peek_sender,
    refused_at_receipt,
    registry_refusal,
)
from gateway.ingest_answers import IngestAnswers
from gateway.ingest_model import (
    AlreadyJournaled,
    ControlIdReused,
    Inbound,
    InternalError,
    JournaledWrite,
    Outcome,
    journal_fields,
    message_context,
    record,
    sender_ignores,
    settled,
)
from gateway.ingest_transient import DuplicateAudit, with_retries
from gateway.logging_setup import get_logger
from gateway.metrics import Hl7Counters, message_type_label
from gateway.sender_registry import SenderDirectory
from gateway.settings import Settings
from mappers import (
    Header,
    map_message,
    message_problem,
    parse_message,
    patient_key,
    peek_header,
)

log = get_logger("carebridge.ingest")


def _nothing_changed(results: list[OperationResult]) -> bool:
    """No write changed a resource (identical content, or held back as older): no import event."""
    return all(r.message == "unchanged" or (r.message or "").startswith("stale:") for r in results)


class Ingestor(IngestAnswers):
    """Configuration plus the duplicate-audit rate limit: safe to call from many threads at once."""

    def __init__(
        self,
        store: FhirStore,
        settings: Settings,
        *,
        policy: SenderPolicy | None = None,
        metrics: Hl7Counters | None = None,
        senders: SenderLookup | None = None,
    ) -> None:
        """``senders`` finds registered senders (default: a :class:`SenderDirectory` on the store's
        engine); ``CAREBRIDGE_MLLP_OPEN=true`` (``settings.mllp.open``) accepts any sender."""
        self.store = store
        self.metrics = metrics if metrics is not None else Hl7Counters()
        self.engine = store.engine
        self.settings = settings
        self.strict = settings.hl7.strict
        # Mapper output is validated against the FHIR models by the mapper test suite
        # (including hypothesis properties), so re-validating it per message is opt-in:
        # it is the largest single CPU cost of the ingest path (bench/mllp_ingest.py).
        self.validate_resources = settings.hl7.strict or settings.hl7.validate_resources
        self.policy = policy or SenderPolicy()
        self.open_senders = settings.mllp.open
        self.senders: SenderLookup | None = None
        # the registry also gives a sender's default charset, read in open mode too
        self._registry: SenderLookup = senders or SenderDirectory(store.engine).lookup
        if not self.open_senders:
            self.senders = self._registry
        self._charsets = settings.hl7.charset_map()
        self.duplicate_audit = DuplicateAudit(settings.hl7.duplicate_audit_interval_s)

    # -- step 1: pure --------------------------------------------------------------------

    def default_charset(self, application: str, facility: str) -> str:
        """The charset of a message without MSH-18 (HL7 v2.5 ch. 2.15.9: the default is agreed per sender).

        The registered sender's (``carebridge senders set-charset``, the console) first,
        then ``CAREBRIDGE_HL7_SENDER_CHARSETS``, then ``CAREBRIDGE_HL7_DEFAULT_CHARSET``.
        An unreadable registry falls back to the settings (the sender check refuses then).
        """
        try:
            sender = self._registry(application, facility) if application or facility else None
        except Exception:
            sender = None
        if sender is not None and sender.charset:
            return sender.charset
        return (
            self._charsets.get(f"{application}^{facility}")
            or self._charsets.get(application)
            or self.settings.hl7.default_charset
        )

    def prepare(
        self,
        raw: bytes,
        *,
        peer: str = "",
        identity: str | None = None,
        journaled: JournalEntry | None = None,
    ) -> Inbound:
        """Tokenize, authorise and map (no I/O but the sender registry's reload): errors are carried, never raised.

        ``journaled``: the journal row being replayed.  A row the sender check
        refused when it arrived stays refused; otherwise the sender must still be
        registered and enabled (its peer was checked at receipt).
        """
        charset = self.default_charset(*peek_sender(raw))
        try:
            msg = parse_message(raw, default_charset=charset)
        except CarebridgeError as exc:
            header = peek_header(raw, default_charset=charset)
            refused = None if header is None else self._sender_refusal(header, peer, identity, journaled)
            return Inbound(raw, peer, identity, None, header, refused or exc, None, None)
        except Exception:  # the tokenizer must never take the listener down
            unreadable = UnparseableMessage("message could not be read")
            return Inbound(raw, peer, identity, None, None, unreadable, None, None)
        header = msg.header
        hl7 = self.settings.hl7
        problem = message_problem(msg, max_segments=hl7.max_segments, max_repetitions=hl7.max_repetitions)
        if problem is not None:  # refused before mapping: bounded work, an AR naming the field
            refused = self._sender_refusal(header, peer, identity, journaled)
            return Inbound(raw, peer, identity, None, header, refused or problem, None, None)
        key = patient_key(msg)
        refused = self._sender_refusal(header, peer, identity, journaled)
        if refused is not None:
            return Inbound(raw, peer, identity, msg, header, refused, key, None)
        ignored = sender_ignores(self.settings.hl7, msg)
        if ignored is not None:
            return Inbound(raw, peer, identity, msg, header, ignored, key, None)
        try:
            mapping = map_message(msg)
        except CarebridgeError as exc:
            return Inbound(raw, peer, identity, msg, header, exc, key, None)
        except Exception as exc:
            log.error("hl7 mapper crashed", control_id=header.control_id, error_type=type(exc).__name__)
            crash = InternalError("internal error while mapping the message")
            return Inbound(raw, peer, identity, msg, header, crash, key, None)
        return Inbound(raw, peer, identity, msg, header, None, mapping.patient_key or key, mapping)

    def _sender_refusal(
        self, header: Header, peer: str, identity: str | None, journaled: JournalEntry | None
    ) -> CarebridgeError | None:
        """The sender registry's and the TLS allow-list's verdict on MSH-3/MSH-4 (logged and counted)."""
        app, fac = header.sending_application, header.sending_facility
        reason: str | None = None
        if journaled is not None and refused_at_receipt(journaled.error):
            reason = "refused-at-receipt"
        elif self.senders is not None:
            try:
                reason = registry_refusal(
                    self.senders, app, fac, peer, identity, replay=journaled is not None
                )
            except Exception as exc:  # registry unreadable: refuse (fail closed), the sender retries
                log.error("hl7 sender registry unavailable", error_type=type(exc).__name__)
                return InternalError(f"{NOT_CHECKED}: sender registry unavailable; please retry")
        if reason is None and journaled is None and not self.policy.permits(identity, app, fac):
            self.metrics.sender_refused("certificate")
            log.warning("hl7 sender refused", reason="certificate", application=app, facility=fac, peer=peer)
            return Forbidden(f"{NOT_ALLOWED}: {app}^{fac} for this connection", location="MSH-3")
        if reason is None:
            return None
        self.metrics.sender_refused(reason)
        log.warning("hl7 sender refused", reason=reason, application=app, facility=fac, peer=peer)
        if journaled is not None and reason != "refused-at-receipt":
            return SenderWithdrawn(app, fac)
        return SenderNotRegistered(app, fac)

    # -- steps 2 and 3 ---------------------------------------------------------------------

    def handle(
        self,
        raw: bytes,
        *,
        peer: str = "",
        identity: str | None = None,
        on_commit: Callable[[bytes], None] | None = None,
    ) -> Outcome:
        return self.process(self.prepare(raw, peer=peer, identity=identity), on_commit=on_commit)

    def process(self, inbound: Inbound, *, on_commit: Callable[[bytes], None] | None = None) -> Outcome:
        """Journal, then apply; ``on_commit`` receives an enhanced-mode commit ACK right after the commit.

        Blocking (database I/O): the listener runs it in a worker thread.  Counted in
        :attr:`metrics` (received, then answered by ACK code) for ``/metrics``.
        """
        started = time.monotonic()
        self.metrics.received(message_type_label(inbound.header))
        try:
            outcome = self._process(inbound, on_commit)
        except Exception as exc:  # a journal read or write failed: nothing stored as final
            kind = transient_kind(exc)
            if kind is None:
                raise
            outcome = self._transient(inbound, None, kind, journal=False)
        self.answered(inbound, outcome, started)
        return outcome

    def _process(self, inbound: Inbound, on_commit: Callable[[bytes], None] | None) -> Outcome:
        if inbound.error is not None:
            return self._reject(inbound, inbound.error, on_commit)
        if self.one_phase(inbound):
            return self._journal_and_apply(inbound, on_commit)
        # Enhanced mode with a commit ACK: the CA must follow the journal commit, before the work.
        inserted = journal_insert_message_entry(
            self.engine, **journal_fields(inbound), cipher=self.store.cipher
        )
        if inserted is None:
            existing = self._existing(inbound)
            if existing.status in JOURNAL_FINAL_STATUSES and existing.ack is not None:
                return self._duplicate(inbound, existing, on_commit)
            journal_id = existing.id  # a crash left it 'received': finish it now
            log.info("hl7 resuming journaled message", journal_id=journal_id)
        else:
            journal_id = inserted.id
            if inserted.reused and self._reused(inbound, journal_id) == "refuse":
                if on_commit is not None:
                    on_commit(self._ack(inbound, "CA"))  # it is journaled: the commit ACK holds
                return self._fail(inbound, journal_id, ControlIdReused())
        if on_commit is not None:
            on_commit(self._ack(inbound, "CA"))
        return self.apply(inbound, journal_id)

    def one_phase(self, inbound: Inbound) -> bool:
        """Whether the message is applied in the transaction that journals it (no commit ACK)."""
        return inbound.error is None and inbound.mapping is not None and not self._wanted(inbound, True)[0]

    def write_unit(self, inbound: Inbound) -> JournaledWrite:
        """The store work of a one-phase message: its journal row first, then its operations.

        The row is inserted already ``processed`` with the AA it will send, in the
        store transaction that applies the message: the raw bytes are still durable
        before any ACK leaves (commit-acknowledge), together with what they caused, in
        one commit instead of two.  The journal's unique sender+MSH-10 key turns a
        duplicate delivery into :class:`AlreadyJournaled` before anything is applied.
        """
        assert inbound.mapping is not None
        _, items = bundle_operations(inbound.mapping.bundle)
        ops: list[Operation] = [op for op in items if not isinstance(op, ReadEntry)]
        ack = self._ack(inbound, "AA")
        audit = self._audit()
        journal_ids: list[int] = []
        reused: list[bool] = []
        stale: list[str] = []

        fields = journal_fields(inbound)
        refuse_reuse = self.reuse_action(inbound) == "refuse"

        def journal_row(conn: Connection) -> RequestContext:
            inserted = journal_insert_entry(
                conn, **fields, status=JOURNAL_PROCESSED, ack_code="AA", ack=ack, cipher=self.store.cipher
            )
            if inserted is None:
                raise AlreadyJournaled
            if inserted.reused and refuse_reuse:
                raise ControlIdReused  # rolled back, then journaled failed with its AE (_reject)
            journal_ids.append(inserted.id)
            reused.append(inserted.reused)
            return message_context(inbound, inserted.id)

        def finish(conn: Connection, results: list[OperationResult]) -> None:
            stale[:] = self._held_back(conn, journal_ids[-1], results)
            if audit is not None and _nothing_changed(results):
                # nothing changed, so the store hook wrote no import event
                record(audit, inbound, journal_ids[-1], "AA", conn=conn)

        return JournaledWrite(WriteUnit(ops, journal_row, finish), ack, journal_ids, reused, stale)

    def applied(self, inbound: Inbound, write: JournaledWrite) -> Outcome:
        """The outcome of a committed one-phase write (its ACK has not left yet)."""
        if write.reused[-1]:
            self._reused(inbound, write.journal_ids[-1])
        _, application = self._wanted(inbound, success=True)
        status = self._settled_status(inbound, write.journal_ids[-1], write.stale)
        return Outcome([write.ack] if application else [], "AA", write.journal_ids[-1], status)

    def _journal_and_apply(self, inbound: Inbound, on_commit: Callable[[bytes], None] | None) -> Outcome:
        """One transaction for the journal row and the effects (:meth:`write_unit`).

        If the store refuses the message, that transaction rolls back and the row is
        written ``failed``/``rejected`` with its AE/AR in a transaction of its own.
        """
        write = self.write_unit(inbound)
        unit = write.unit
        try:
            with_retries(
                lambda: self.store.transact(
                    unit.ops, unit.context, validate=self.validate_resources, extra=unit.extra
                ),
                self.settings.hl7.transient_retries,
            )
        except AlreadyJournaled:
            existing = self._existing(inbound)
            if existing.status in JOURNAL_FINAL_STATUSES and existing.ack is not None:
                return self._duplicate(inbound, existing, on_commit)
            log.info("hl7 resuming journaled message", journal_id=existing.id)
            return self.apply(inbound, existing.id)
        except Exception as exc:  # a statement timeout is a CarebridgeError and transient
            kind = transient_kind(exc)
            if kind is not None:
                return self._transient(inbound, None, kind)
            if isinstance(exc, CarebridgeError):
                return self._reject(inbound, exc, on_commit)
            log.error("hl7 internal error", error_type=type(exc).__name__)
            return self._reject(
                inbound, InternalError("internal error while applying the message"), on_commit
            )
        return self.applied(inbound, write)

    def apply(self, inbound: Inbound, journal_id: int) -> Outcome:
        """Map and store a journaled message; mark its row.  Also the replay path."""
        assert inbound.message is not None and inbound.mapping is not None
        try:
            _, items = bundle_operations(inbound.mapping.bundle)
            ops: list[Operation] = [op for op in items if not isinstance(op, ReadEntry)]
            ack = self._ack(inbound, "AA")
            context = message_context(inbound, journal_id)
            audit = self._audit()

            stale: list[str] = []

            def finish(conn: Connection, results: list[OperationResult]) -> None:
                journal_mark_processed(conn, journal_id, "AA", ack)
                stale[:] = self._held_back(conn, journal_id, results)
                if audit is not None and _nothing_changed(results):
                    # nothing changed, so the store hook wrote no import event
                    record(audit, inbound, journal_id, "AA", conn=conn)

            with_retries(
                lambda: self.store.transact(ops, context, validate=self.validate_resources, extra=finish),
                self.settings.hl7.transient_retries,
            )
        except Exception as exc:  # a statement timeout is a CarebridgeError and transient
            kind = transient_kind(exc)
            if kind is not None:
                return self._transient(inbound, journal_id, kind)
            if isinstance(exc, CarebridgeError):
                return self._fail(inbound, journal_id, exc)
            log.error("hl7 internal error", journal_id=journal_id, error_type=type(exc).__name__)
            return self._fail(inbound, journal_id, InternalError("internal error while applying the message"))
        _, application = self._wanted(inbound, success=True)
        status = self._settled_status(inbound, journal_id, stale)
        return Outcome([ack] if application else [], "AA", journal_id, status)

    # -- event-time ordering ---------------------------------------------------------------

    # -- replay ----------------------------------------------------------------------------

    def replay(self, journal_id: int) -> Outcome:
        """Re-run one journaled message through the current mappers and update its row."""
        entry = journal_load(self.engine, journal_id, self.store.cipher)
        if entry is None:
            raise KeyError(journal_id)
        inbound = self.prepare(entry.raw, peer=entry.peer, journaled=entry)
        if inbound.error is not None:
            error = inbound.error
            code, status = settled(error)
            ack = self._ack(inbound, code, error)
            journal_mark_failed(
                self.engine, journal_id, status=status, ack_code=code, ack=ack, error=str(error)
            )
            return Outcome([ack], code, journal_id, status, error=str(error))
        return self.apply(inbound, journal_id)
