"""HL7 v2 ingest: journal → map → store transaction → ACK (the domain service behind MLLP).

The MLLP listener only turns bytes into :meth:`Ingestor.handle` calls and ACK
bytes back into frames; everything with a meaning lives here so that the
listener, ``carebridge hl7 replay`` and the tests share one path.

Order of effects for one message (commit-acknowledge, HL7 v2.5 ch. 2.9):

1. :meth:`Ingestor.prepare` (pure, no I/O): tokenize with the sender's default
   charset, check the TLS sender allow-list, map to a FHIR transaction
   Bundle (mappers are pure, so this needs no database) and compute the
   patient key used for ordering.  Errors are carried, not raised.
2. Journal: the raw bytes are committed to ``hl7_journal``: status
   ``received``, or directly ``failed`` (AE) / ``rejected`` (AR) together
   with the ACK when step 1 already found the message unusable.  A unique
   (MSH-3, MSH-4, MSH-10) makes a duplicate delivery visible: its *stored*
   ACK is returned and nothing is written.  A duplicate of a ``received`` row
   (the process died before finishing it) is completed now instead.
3. Apply: one ``FhirStore.transact`` whose ``extra`` marks the row
   ``processed`` with the AA it will send -- resources, audit/outbox hook rows
   and the journal status commit together.  A store error marks the row
   ``failed``/``rejected`` with the error text; anything unexpected becomes
   AE 207 (HL7 table 0357) and the caller carries on.

Audit (IHE BALP import, DICOM 110107): every message leaves an AuditEvent
whose agent is the sender (TLS identity or MSH-3) and whose job entity is the
control id -- never patient data.  An applied message that changed resources
is already recorded by the store's audit hook (one import event per changed
resource, request id ``hl7-<journal id>``, same transaction), so it gets no
second event; an AA that changed nothing (identical A08) gets one message event
in its transaction; refused AE/AR messages and duplicate deliveries, which
never reach the store, get one in a transaction of their own right after the
journal write.

ACK modes.  Original mode (MSH-15/16 empty): one application ACK.  Enhanced
mode (HL7 v2.5 ch. 2.9.3) with ``hl7_strict``: a commit ACK (CA/CR) right
after the journal commit if MSH-15 asks for it, the application ACK only if
MSH-16 asks for it.  Without ``hl7_strict`` every message gets its
application ACK (many HIS fill MSH-15/16 with ``AL``/``NE`` from a template
yet wait for AA/AE), preceded by a CA only when MSH-15 *and* MSH-16 both ask
for acknowledgments, so a sender never receives an answer it does not read.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from audit.hooks import AuditHook
from common.errors import CarebridgeError, Forbidden, UnparseableMessage
from fhir_store import journal
from fhir_store.bundles import ReadEntry, bundle_operations
from fhir_store.model import Operation, OperationResult, RequestContext
from fhir_store.repository import FhirStore, WriteUnit
from gateway.hl7_senders import SenderPolicy, peek_sender
from gateway.logging_setup import get_logger
from gateway.metrics import Hl7Counters, message_type_label
from gateway.settings import Settings
from mappers.ack import acks_to_send, build_ack, build_ack_hl7apy, build_fallback_ack
from mappers.hl7_message import Header, Hl7Message, parse_message, patient_key, peek_header
from mappers.result import MappingResult
from mappers.router import map_message

log = get_logger("carebridge.ingest")

#: Test-only hook: when set, the process dies (``os._exit``) right after the first journal commit.
CRASH_HOOK_ENV = "CAREBRIDGE_TEST_CRASH_AFTER_JOURNAL"


class AlreadyJournaled(Exception):
    """Raised inside the store transaction when the journal already holds this message."""


class InternalError(CarebridgeError):
    """An unexpected failure, rendered without its details (they may quote patient data)."""

    hl7_error_code = "207"


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received message after :meth:`Ingestor.prepare`."""

    raw: bytes
    peer: str
    identity: str | None
    message: Hl7Message | None
    header: Header | None  # also set for some unparseable messages (to address the AR)
    error: CarebridgeError | None  # set → journaled as failed/rejected, never applied
    patient_key: str | None
    mapping: MappingResult | None  # the FHIR transaction Bundle (mappers are pure: done up front)


@dataclass(frozen=True, slots=True)
class JournaledWrite:
    """A one-phase message's store work, its AA, and (once run) its journal row id."""

    unit: WriteUnit
    ack: bytes
    journal_ids: list[int]  # appended by each attempt's journal insert; the last one committed


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to send back, in order, and what happened."""

    acks: list[bytes]
    ack_code: str  # application-level outcome AA/AE/AR
    journal_id: int | None
    status: str
    duplicate: bool = False
    error: str | None = None


def _message_type(header: Header) -> str:
    return f"{header.message_code}^{header.trigger_event}".strip("^")


def _new_ack_id() -> str:
    return uuid.uuid4().hex[:20]


def _message_context(inbound: Inbound, journal_id: int | None) -> RequestContext:
    """The sender as audit agent: TLS identity, else MSH-3 (never anything from PID)."""
    header = inbound.header
    return RequestContext(
        request_id=f"hl7-{journal_id}" if journal_id is not None else f"hl7-{uuid.uuid4().hex}",
        client_id=inbound.identity or (header.sending_application if header else "") or "hl7",
        role="hl7-sender",
        channel="hl7",
        source_address=inbound.peer or None,
    )


def _record(
    audit: AuditHook,
    inbound: Inbound,
    journal_id: int | None,
    ack_code: str,
    *,
    conn: Connection | None = None,
) -> None:
    header = inbound.header
    control_id = (header.control_id.strip() if header else "") or "unknown"
    message_type = _message_type(header) if header else ""
    audit.record_message(
        _message_context(inbound, journal_id),
        control_id=control_id[:64],
        message_type=message_type or "unknown",
        ack_code=ack_code,
        conn=conn,
    )


class Ingestor:
    """Stateless apart from configuration: safe to call from many threads at once."""

    def __init__(
        self,
        store: FhirStore,
        settings: Settings,
        *,
        policy: SenderPolicy | None = None,
        metrics: Hl7Counters | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics if metrics is not None else Hl7Counters()
        self.engine = store.engine
        self.settings = settings
        self.strict = settings.hl7_strict
        # Mapper output is validated against the FHIR models by the mapper test suite
        # (including hypothesis properties), so re-validating it per message is opt-in:
        # it is the largest single CPU cost of the ingest path (bench/mllp_ingest.py).
        self.validate_resources = settings.hl7_strict or settings.hl7_validate_resources
        self.policy = policy or SenderPolicy()
        self._charsets = settings.sender_charsets()
        self._crash_after_journal = bool(os.environ.get(CRASH_HOOK_ENV))

    # -- step 1: pure --------------------------------------------------------------------

    def default_charset(self, application: str, facility: str) -> str:
        return (
            self._charsets.get(f"{application}^{facility}")
            or self._charsets.get(application)
            or self.settings.hl7_default_charset
        )

    def prepare(self, raw: bytes, *, peer: str = "", identity: str | None = None) -> Inbound:
        """Tokenize, authorise and map (pure, no I/O): errors are carried, never raised."""
        charset = self.default_charset(*peek_sender(raw))
        try:
            msg = parse_message(raw, default_charset=charset)
        except CarebridgeError as exc:
            header = peek_header(raw, default_charset=charset)
            return Inbound(raw, peer, identity, None, header, exc, None, None)
        except Exception:  # the tokenizer must never take the listener down
            unreadable = UnparseableMessage("message could not be read")
            return Inbound(raw, peer, identity, None, None, unreadable, None, None)
        header = msg.header
        key = patient_key(msg)
        if not self.policy.permits(identity, header.sending_application, header.sending_facility):
            error: CarebridgeError = Forbidden(
                f"sender {header.sending_application}^{header.sending_facility} is not allowed "
                f"for this connection",
                location="MSH-3",
            )
            return Inbound(raw, peer, identity, msg, header, error, key, None)
        try:
            mapping = map_message(msg)
        except CarebridgeError as exc:
            return Inbound(raw, peer, identity, msg, header, exc, key, None)
        except Exception as exc:
            log.error("hl7 mapper crashed", control_id=header.control_id, error_type=type(exc).__name__)
            crash = InternalError("internal error while mapping the message")
            return Inbound(raw, peer, identity, msg, header, crash, key, None)
        return Inbound(raw, peer, identity, msg, header, None, mapping.patient_key or key, mapping)

    # -- ACK rendering ---------------------------------------------------------------------

    def _ack(self, inbound: Inbound, code: str, error: CarebridgeError | None = None) -> bytes:
        if inbound.message is None and inbound.header is None:
            return build_fallback_ack(
                inbound.raw, error or UnparseableMessage("?"), control_id=_new_ack_id(), ack_code=code
            )
        header = inbound.header
        assert header is not None
        if self.strict:
            try:
                return build_ack_hl7apy(header, ack_code=code, error=error, control_id=_new_ack_id())
            except Exception:  # hl7apy refuses some odd inputs; the fast builder never does
                pass
        return build_ack(header, ack_code=code, error=error, control_id=_new_ack_id())

    def _wanted(self, inbound: Inbound, success: bool) -> tuple[bool, bool]:
        if inbound.header is None:
            return False, True
        commit, application = acks_to_send(inbound.header, success=success)
        if self.strict:
            return commit, application
        return commit and application, True

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
        mtype = message_type_label(inbound.header)
        self.metrics.received(mtype)
        outcome = self._process(inbound, on_commit)
        self.metrics.answered(mtype, outcome.ack_code)
        return outcome

    def _process(self, inbound: Inbound, on_commit: Callable[[bytes], None] | None) -> Outcome:
        header = inbound.header
        app = header.sending_application if header else ""
        fac = header.sending_facility if header else ""
        control_id = header.control_id.strip() if header else ""
        mtype = _message_type(header) if header else ""
        if inbound.error is not None:
            return self._reject(inbound, inbound.error, app, fac, control_id, mtype, on_commit)
        if self.one_phase(inbound):
            return self._journal_and_apply(inbound, app, fac, control_id, mtype, on_commit)
        # Enhanced mode with a commit ACK: the CA must follow the journal commit, before the work.
        journal_id = journal.insert_message(
            self.engine,
            raw=inbound.raw,
            peer=inbound.peer,
            sending_application=app,
            sending_facility=fac,
            control_id=control_id,
            message_type=mtype,
            cipher=self.store.cipher,
        )
        if journal_id is None:
            existing = journal.find_duplicate(self.engine, app, fac, control_id, self.store.cipher)
            if existing is None:  # pragma: no cover - the row cannot vanish
                raise RuntimeError("journal conflict without a row")
            if existing.status in journal.FINAL_STATUSES and existing.ack is not None:
                return self._duplicate(inbound, existing, on_commit)
            journal_id = existing.id  # a crash left it 'received': finish it now
            log.info("hl7 resuming journaled message", journal_id=journal_id, control_id=control_id)
        elif self._crash_after_journal:
            os._exit(86)
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
        assert inbound.mapping is not None and inbound.header is not None
        header = inbound.header
        _, items = bundle_operations(inbound.mapping.bundle)
        ops: list[Operation] = [op for op in items if not isinstance(op, ReadEntry)]
        ack = self._ack(inbound, "AA")
        audit = self._audit()
        journal_ids: list[int] = []

        def journal_row(conn: Connection) -> RequestContext:
            journal_id = journal.insert_row(
                conn,
                raw=inbound.raw,
                peer=inbound.peer,
                sending_application=header.sending_application,
                sending_facility=header.sending_facility,
                control_id=header.control_id.strip(),
                message_type=_message_type(header),
                cipher=self.store.cipher,
                status=journal.PROCESSED,
                ack_code="AA",
                ack=ack,
            )
            if journal_id is None:
                raise AlreadyJournaled
            journal_ids.append(journal_id)
            return _message_context(inbound, journal_id)

        def finish(conn: Connection, results: list[OperationResult]) -> None:
            if audit is not None and all(r.message == "unchanged" for r in results):
                # nothing changed, so the store hook wrote no import event
                _record(audit, inbound, journal_ids[-1], "AA", conn=conn)

        return JournaledWrite(WriteUnit(ops, journal_row, finish), ack, journal_ids)

    def applied(self, inbound: Inbound, write: JournaledWrite) -> Outcome:
        """The outcome of a committed one-phase write (the test crash hook fires here)."""
        if self._crash_after_journal:
            os._exit(86)
        _, application = self._wanted(inbound, success=True)
        return Outcome([write.ack] if application else [], "AA", write.journal_ids[-1], journal.PROCESSED)

    def _journal_and_apply(
        self,
        inbound: Inbound,
        app: str,
        fac: str,
        control_id: str,
        mtype: str,
        on_commit: Callable[[bytes], None] | None,
    ) -> Outcome:
        """One transaction for the journal row and the effects (:meth:`write_unit`).

        If the store refuses the message, that transaction rolls back and the row is
        written ``failed``/``rejected`` with its AE/AR in a transaction of its own.
        """
        write = self.write_unit(inbound)
        unit = write.unit
        try:
            self.store.transact(unit.ops, unit.context, validate=self.validate_resources, extra=unit.extra)
        except AlreadyJournaled:
            existing = journal.find_duplicate(self.engine, app, fac, control_id, self.store.cipher)
            if existing is None:  # pragma: no cover - the row cannot vanish
                raise RuntimeError("journal conflict without a row") from None
            if existing.status in journal.FINAL_STATUSES and existing.ack is not None:
                return self._duplicate(inbound, existing, on_commit)
            log.info("hl7 resuming journaled message", journal_id=existing.id, control_id=control_id)
            return self.apply(inbound, existing.id)
        except CarebridgeError as exc:
            return self._reject(inbound, exc, app, fac, control_id, mtype, on_commit)
        except Exception as exc:
            log.error("hl7 internal error", control_id=control_id, error_type=type(exc).__name__)
            error = InternalError("internal error while applying the message")
            return self._reject(inbound, error, app, fac, control_id, mtype, on_commit)
        return self.applied(inbound, write)

    def apply(self, inbound: Inbound, journal_id: int) -> Outcome:
        """Map and store a journaled message; mark its row.  Also the replay path."""
        assert inbound.message is not None and inbound.mapping is not None
        try:
            _, items = bundle_operations(inbound.mapping.bundle)
            ops: list[Operation] = [op for op in items if not isinstance(op, ReadEntry)]
            ack = self._ack(inbound, "AA")
            context = _message_context(inbound, journal_id)
            audit = self._audit()

            def finish(conn: Connection, results: list[OperationResult]) -> None:
                journal.mark_processed(conn, journal_id, "AA", ack)
                if audit is not None and all(r.message == "unchanged" for r in results):
                    # nothing changed, so the store hook wrote no import event
                    _record(audit, inbound, journal_id, "AA", conn=conn)

            self.store.transact(ops, context, validate=self.validate_resources, extra=finish)
        except CarebridgeError as exc:
            return self._fail(inbound, journal_id, exc)
        except Exception as exc:
            log.error("hl7 internal error", journal_id=journal_id, error_type=type(exc).__name__)
            return self._fail(inbound, journal_id, InternalError("internal error while applying the message"))
        _, application = self._wanted(inbound, success=True)
        return Outcome([ack] if application else [], "AA", journal_id, journal.PROCESSED)

    def _fail(self, inbound: Inbound, journal_id: int, error: CarebridgeError) -> Outcome:
        code = error.hl7_ack if error.hl7_ack in ("AE", "AR") else "AE"
        status = journal.REJECTED if code == "AR" else journal.FAILED
        ack = self._ack(inbound, code, error)
        journal.mark_failed(self.engine, journal_id, status=status, ack_code=code, ack=ack, error=str(error))
        self._record(inbound, journal_id, code)
        log.info(
            "hl7 message not applied", journal_id=journal_id, ack_code=code, error_code=error.hl7_error_code
        )
        _, application = self._wanted(inbound, success=False)
        return Outcome([ack] if application else [], code, journal_id, status, error=str(error))

    def _reject(
        self,
        inbound: Inbound,
        error: CarebridgeError,
        app: str,
        fac: str,
        control_id: str,
        mtype: str,
        on_commit: Callable[[bytes], None] | None,
    ) -> Outcome:
        code = "AR" if error.hl7_ack == "AR" else "AE"
        ack = self._ack(inbound, code, error)
        journal_id = journal.insert_message(
            self.engine,
            raw=inbound.raw,
            peer=inbound.peer,
            sending_application=app,
            sending_facility=fac,
            control_id=control_id,
            message_type=mtype,
            cipher=self.store.cipher,
            status=journal.REJECTED if code == "AR" else journal.FAILED,
            ack_code=code,
            ack=ack,
            error=str(error),
        )
        if journal_id is None:
            existing = journal.find_duplicate(self.engine, app, fac, control_id, self.store.cipher)
            if existing is not None and existing.ack is not None:
                return self._duplicate(inbound, existing, on_commit)
        self._record(inbound, journal_id, code)
        log.info(
            "hl7 message rejected", journal_id=journal_id, ack_code=code, error_code=error.hl7_error_code
        )
        # AR-class errors refuse the message at commit level (CR); AE ones were committed (CA).
        commit = self._wanted(inbound, success=code == "AE")[0]
        application = self._wanted(inbound, success=False)[1]
        if commit and on_commit is not None:
            on_commit(self._ack(inbound, "CR", error) if code == "AR" else self._ack(inbound, "CA"))
        status = journal.REJECTED if code == "AR" else journal.FAILED
        return Outcome([ack] if application else [], code, journal_id, status, error=str(error))

    def _duplicate(
        self, inbound: Inbound, existing: journal.JournalEntry, on_commit: Callable[[bytes], None] | None
    ) -> Outcome:
        assert existing.ack is not None
        self._record(inbound, existing.id, existing.ack_code or "AE")
        success = existing.ack_code == "AA"
        commit, application = self._wanted(inbound, success=success)
        if commit and on_commit is not None:
            on_commit(self._ack(inbound, "CA"))
        log.info("hl7 duplicate delivery", journal_id=existing.id, ack_code=existing.ack_code)
        return Outcome(
            [existing.ack] if application else [],
            existing.ack_code or "AE",
            existing.id,
            existing.status,
            duplicate=True,
            error=existing.error,
        )

    # -- audit ---------------------------------------------------------------------------

    def _audit(self) -> AuditHook | None:
        """The store's audit hook (found, not injected: every runtime attaches one)."""
        for hook in self.store.hooks:
            if isinstance(hook, AuditHook):
                return hook
        return None

    def _record(self, inbound: Inbound, journal_id: int | None, ack_code: str) -> None:
        """The message's own AuditEvent, outside the store (refused or duplicate messages)."""
        audit = self._audit()
        if audit is None:
            return
        try:
            _record(audit, inbound, journal_id, ack_code)
        except Exception as exc:  # the ACK must still go out; the journal row has the message
            log.error("hl7 audit event not written", journal_id=journal_id, error_type=type(exc).__name__)

    # -- replay ----------------------------------------------------------------------------

    def replay(self, journal_id: int) -> Outcome:
        """Re-run one journaled message through the current mappers and update its row."""
        entry = journal.load(self.engine, journal_id, self.store.cipher)
        if entry is None:
            raise KeyError(journal_id)
        inbound = self.prepare(entry.raw, peer=entry.peer)
        if inbound.error is not None:
            error = inbound.error
            code = "AR" if error.hl7_ack == "AR" else "AE"
            ack = self._ack(inbound, code, error)
            status = journal.REJECTED if code == "AR" else journal.FAILED
            journal.mark_failed(
                self.engine, journal_id, status=status, ack_code=code, ack=ack, error=str(error)
            )
            return Outcome([ack], code, journal_id, status, error=str(error))
        return self.apply(inbound, journal_id)
