"""What the HL7 ingest passes around: a prepared message, its outcome, and how it is answered.

Split from :mod:`gateway.ingest` so the listener, the group commit and the
replay CLI share these types without the service itself.

ACK modes (original/enhanced, ``hl7_strict`` or not) are decided in one
place, :func:`mappers.ack.acks_to_send`; a commit ACK is sent right after the
journal commit, the application ACK after the work.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from audit import AuditHook
from common import CarebridgeError, Forbidden, Hl7Settings, MessageIgnored, UnparseableMessage
from fhir_store import JOURNAL_FAILED, JOURNAL_IGNORED, JOURNAL_REJECTED, RequestContext, WriteUnit
from gateway.logging_setup import get_logger
from gateway.metrics import Hl7Counters
from mappers import (
    Header,
    Hl7Message,
    MappingResult,
    acks_to_send,
    build_fallback_ack,
    build_mode_ack,
    canonical_content,
)


class AlreadyJournaled(Exception):
    """Raised inside the store transaction when the journal already holds this message."""


class InternalError(CarebridgeError):
    """An unexpected failure, rendered without its details (they may quote patient data)."""

    hl7_error_code = "207"


class ControlIdReused(CarebridgeError):
    """The sender's MSH-10 was journaled before with other content, and this sender is refused for it.

    HL7 table 0357 code 205 "duplicate key identifier", at MSH-10; AE, so the
    sender may resend with a fresh control id (or an operator replays the row).
    """

    http_status = 409
    issue_code = "duplicate"
    hl7_error_code = "205"

    def __init__(self) -> None:
        super().__init__(
            "message control id was already used for a message with other content", location="MSH-10"
        )


@dataclass(frozen=True, slots=True)
class Inbound:
    """One received message after :meth:`Ingestor.prepare`."""

    raw: bytes
    peer: str
    identity: str | None
    message: Hl7Message | None
    header: Header | None  # also set for some unparseable messages (to address the AR)
    error: CarebridgeError | None  # set → journaled failed/rejected/ignored, never applied
    patient_key: str | None
    mapping: MappingResult | None  # the FHIR transaction Bundle (mappers are pure: done up front)


@dataclass(frozen=True, slots=True)
class JournaledWrite:
    """A one-phase message's store work, its AA, and (once run) its journal row id."""

    unit: WriteUnit
    ack: bytes
    journal_ids: list[int]  # appended by each attempt's journal insert; the last one committed
    reused: list[bool]  # per attempt: the sender + MSH-10 was journaled before with other content
    stale: list[str] = field(default_factory=list)  # the last attempt's held-back writes (event order)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to send back, in order, and what happened."""

    acks: list[bytes]
    ack_code: str  # application-level outcome AA/AE/AR
    journal_id: int | None
    status: str
    duplicate: bool = False
    error: str | None = None


def message_type(header: Header) -> str:
    return f"{header.message_code}^{header.trigger_event}".strip("^")


def content(inbound: Inbound) -> bytes:
    """What a duplicate delivery has in common with the first (decoded text when decodable)."""
    if inbound.message is not None:
        return canonical_content(inbound.message.text.encode("utf-8"))
    return canonical_content(inbound.raw)


def journal_fields(inbound: Inbound) -> dict[str, Any]:
    """The journal columns that describe the message (fhir_store.journal.insert_entry keywords).

    A sender refused for this connection is never matched with a journaled message
    (``dedup``): the sender check comes before the duplicate lookup, so a connection
    that may not speak for MSH-3/MSH-4 never receives another connection's stored ACK.
    """
    header = inbound.header
    return {
        "content": content(inbound),
        "dedup": not isinstance(inbound.error, Forbidden),
        "raw": inbound.raw,
        "peer": inbound.peer,
        "sending_application": header.sending_application if header else "",
        "sending_facility": header.sending_facility if header else "",
        "control_id": header.control_id.strip() if header else "",
        "message_type": message_type(header) if header else "",
    }


def new_ack_id() -> str:
    return uuid.uuid4().hex[:20]


def message_context(inbound: Inbound, journal_id: int | None) -> RequestContext:
    """The sender as audit agent: TLS identity, else MSH-3 (never anything from PID)."""
    header = inbound.header
    return RequestContext(
        request_id=f"hl7-{journal_id}" if journal_id is not None else f"hl7-{uuid.uuid4().hex}",
        client_id=inbound.identity or (header.sending_application if header else "") or "hl7",
        role="hl7-sender",
        channel="hl7",
        source_address=inbound.peer or None,
        event_time_us=inbound.mapping.event_time_us if inbound.mapping is not None else None,
    )


def record(
    audit: AuditHook,
    inbound: Inbound,
    journal_id: int | None,
    ack_code: str,
    *,
    conn: Connection | None = None,
    deliveries: int = 1,
) -> None:
    header = inbound.header
    control_id = (header.control_id.strip() if header else "") or "unknown"
    kind = message_type(header) if header else ""
    audit.record_message(
        message_context(inbound, journal_id),
        control_id=control_id[:64],
        message_type=kind or "unknown",
        ack_code=ack_code,
        conn=conn,
        deliveries=deliveries,
    )


def render_ack(inbound: Inbound, code: str, error: CarebridgeError | None = None, *, strict: bool) -> bytes:
    """The ACK bytes: hl7apy in strict mode (falling back to the fast builder), else the fast builder."""
    if inbound.message is None and inbound.header is None:
        return build_fallback_ack(
            inbound.raw, error or UnparseableMessage("?"), control_id=new_ack_id(), ack_code=code
        )
    header = inbound.header
    assert header is not None
    return build_mode_ack(header, ack_code=code, error=error, control_id=new_ack_id(), strict=strict)


def acks_wanted(inbound: Inbound, success: bool, *, strict: bool) -> tuple[bool, bool]:
    """(commit ACK, application ACK) to send: :func:`mappers.ack.acks_to_send` decides."""
    return acks_to_send(inbound.header, success=success, strict=strict)


log = get_logger("carebridge.ingest")


def reuse_action(settings: Hl7Settings, inbound: Inbound) -> str:
    """``process`` or ``refuse`` a reused control id from this message's sender (settings)."""
    header = inbound.header
    if header is None:
        return settings.control_id_reuse
    return settings.control_id_reuse_for(header.sending_application, header.sending_facility)


def note_reuse(settings: Hl7Settings, metrics: Hl7Counters, inbound: Inbound, journal_id: int) -> str:
    """Count and log a reused control id (ids only: no message content); returns the action."""
    action = reuse_action(settings, inbound)
    metrics.control_id_reused(action)
    header = inbound.header
    log.warning(
        "hl7 control id reused with other content",
        journal_id=journal_id,
        action=action,
        sending_application=header.sending_application if header else "",
        sending_facility=header.sending_facility if header else "",
        control_id=header.control_id.strip() if header else "",
    )
    return action


def settled(error: CarebridgeError) -> tuple[str, str]:
    """(ACK code, journal status) of a message that is not applied: AA ignored, AR rejected, else AE failed."""
    if isinstance(error, MessageIgnored):
        return "AA", JOURNAL_IGNORED
    if error.hl7_ack == "AR":
        return "AR", JOURNAL_REJECTED
    return "AE", JOURNAL_FAILED


def sender_ignores(settings: Hl7Settings, message: Hl7Message) -> MessageIgnored | None:
    """The sender's ignore list (``CAREBRIDGE_HL7_SENDER_IGNORE``) names this message's type or trigger."""
    header = message.header
    app, fac = header.sending_application, header.sending_facility
    code, trigger = header.message_code.strip().upper(), header.trigger_event.strip().upper()
    if not settings.ignored_for(app, fac, code, trigger):
        return None
    kind = f"{code}^{trigger}".strip("^")
    return MessageIgnored(
        f"{kind} ignored: on the ignore list of sender {app}^{fac} (CAREBRIDGE_HL7_SENDER_IGNORE)",
        location="MSH-9",
    )
