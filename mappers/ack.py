"""HL7 v2 acknowledgements (ACK), string-built for the hot path.

HL7 v2.5 ch. 2.9 (acknowledgment modes) and 2.14.8/2.15.5 (MSA, ERR).  The ACK
mirrors the inbound message: same delimiters (MSH-1/MSH-2), same character set
(MSH-18 echoed, bytes encoded with the same codec), same version (MSH-12),
sender and receiver swapped.  ERR uses ERR-2 (ERL), ERR-3 (table 0357), ERR-4
severity and ERR-8 user text for v2.5+, and the older ERR-1 (ELD) for v2.3/2.4.
The output has no MLLP framing; segments are joined by CR.

:func:`build_ack_hl7apy` builds the same ACK with hl7apy for strict mode.
Which ACKs a message gets (original/enhanced mode, strict or not) is decided
by :func:`acks_to_send` and :func:`commit_ack_code`, for every channel.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from common import CarebridgeError
from mappers.hl7_encoding import EncodingChars
from mappers.hl7_message import Header, peek_header

TABLE_0357 = {
    "0": "Message accepted",
    "100": "Segment sequence error",
    "101": "Required field missing",
    "102": "Data type error",
    "103": "Table value not found",
    "104": "Value too long",
    "200": "Unsupported message type",
    "201": "Unsupported event code",
    "202": "Unsupported processing id",
    "203": "Unsupported version id",
    "204": "Unknown key identifier",
    "205": "Duplicate key identifier",
    "206": "Application record locked",
    "207": "Application internal error",
}

APPLICATION_ACK_CODES = frozenset({"AA", "AE", "AR"})  # MSA-1, table 0008
COMMIT_ACK_CODES = frozenset({"CA", "CE", "CR"})  # enhanced mode only
ACK_CODES = APPLICATION_ACK_CODES | COMMIT_ACK_CODES
VN_TZ = timezone(timedelta(hours=7))
_LOCATION_RE = re.compile(
    r"([A-Z][A-Z0-9]{2})(?:\[(\d+)\])?(?:-(\d+)(?:\[(\d+)\])?(?:\.(\d+)(?:\.(\d+))?)?)?"
)
_DEFAULT_ENC = EncodingChars("|", "^", "~", "\\", "&")


def encoding_of(header: Header) -> EncodingChars:
    chars = header.encoding_characters
    if len(chars) < 4:
        return _DEFAULT_ENC
    return EncodingChars(header.field_separator, chars[0], chars[1], chars[2], chars[3], chars[4:])


def escape(value: str, enc: EncodingChars) -> str:
    """HL7-escape text (HL7 v2.5 ch. 2.7.4); line breaks become spaces."""
    e = enc.escape
    out = value.replace(e, f"{e}E{e}")
    for char, code in (
        (enc.field, "F"),
        (enc.component, "S"),
        (enc.subcomponent, "T"),
        (enc.repetition, "R"),
        (enc.truncation, "P"),
    ):
        if char:
            out = out.replace(char, f"{e}{code}{e}")
    return out.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def error_location(location: str | None) -> list[str]:
    """``PID-3[2].4`` → ERL components [PID, 1, 3, 2, 4]; [] when not an HL7 location."""
    if not location:
        return []
    m = _LOCATION_RE.fullmatch(location.strip())
    if m is None:
        return []
    seg, seq, fld, rep, comp, sub = m.groups()
    parts = [seg, seq or "1"]
    if fld:
        parts.append(fld)
        if rep or comp:
            parts += [rep or "1"] + ([comp] if comp else []) + ([sub] if sub else [])
    return parts


def _version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in version.split(".")[:2])
    except ValueError:
        return (2, 5)


def _timestamp(now: datetime | None) -> str:
    return (now or datetime.now(VN_TZ)).strftime("%Y%m%d%H%M%S%z")


def ack_parts(
    header: Header,
    *,
    ack_code: str,
    error: CarebridgeError | None,
    control_id: str,
    now: datetime | None = None,
) -> list[list[str]]:
    """The ACK as [segment][field] lists of already-escaped strings (shared by both builders)."""
    if ack_code not in ACK_CODES:
        raise ValueError(f"not an acknowledgment code: {ack_code!r}")
    enc = encoding_of(header)
    c = enc.component
    old = _version_tuple(header.version) < (2, 5)
    trigger = escape(header.trigger_event, enc)
    msg_type = f"ACK{c}{trigger}{c}ACK" if trigger else "ACK"
    msh = [
        "MSH",
        enc.field,
        enc.msh2,
        escape(header.receiving_application, enc),
        escape(header.receiving_facility, enc),
        escape(header.sending_application, enc),
        escape(header.sending_facility, enc),
        _timestamp(now),
        "",
        msg_type,
        escape(control_id, enc),
        escape(header.processing_id or "P", enc),
        escape(header.version or "2.5", enc),
    ]
    if header.charset:
        msh += ["", "", "", "", "", escape(header.charset, enc)]
    msa = ["MSA", ack_code, escape(header.control_id, enc)]
    segments = [msh, msa]
    if error is not None:
        code = error.hl7_error_code
        label = TABLE_0357.get(code, "Application error")
        text = escape(error.message, enc)
        erl = error_location(error.location)
        if old:
            msa.append(text)  # MSA-3 text message (deprecated in v2.4+, still read by v2.3 systems)
            eld = [*erl[:3]] + [""] * (3 - len(erl[:3])) + [enc.subcomponent.join([code, label, "HL70357"])]
            segments.append(["ERR", c.join(eld)])
        else:
            err3 = c.join([code, label, "HL70357"])
            segments.append(["ERR", "", c.join(erl), err3, error.hl7_severity, "", "", "", text])
    return segments


def _serialize(segments: list[list[str]], enc: EncodingChars) -> str:
    lines = []
    for seg in segments:
        if seg[0] == "MSH":
            lines.append("MSH" + enc.field + enc.field.join(seg[2:]))
        else:
            lines.append(enc.field.join(seg))
    return "\r".join(lines)


def build_ack(
    header: Header,
    *,
    ack_code: str,
    error: CarebridgeError | None = None,
    control_id: str,
    now: datetime | None = None,
) -> bytes:
    """ACK for ``header``'s message.

    ``control_id`` is the ACK's own MSH-10; MSA-2 always echoes the inbound
    MSH-10 (``header.control_id``).  ``ack_code`` is AA/AE/AR (original mode)
    or CA/CE/CR (enhanced-mode commit acknowledgment).
    """
    enc = encoding_of(header)
    text = _serialize(ack_parts(header, ack_code=ack_code, error=error, control_id=control_id, now=now), enc)
    return text.encode(header.codec or "utf-8", errors="replace")


_FALLBACK_HEADER = Header(
    sending_application="",
    sending_facility="",
    receiving_application="",
    receiving_facility="",
    datetime="",
    message_code="",
    trigger_event="",
    structure="",
    control_id="",
    processing_id="P",
    version="2.5",
    accept_ack_type="",
    application_ack_type="",
    charset="UNICODE UTF-8",
    codec="utf-8",
)


def build_fallback_ack(
    raw: bytes, error: CarebridgeError, *, control_id: str, now: datetime | None = None, ack_code: str = "AR"
) -> bytes:
    """AR for input that :func:`~mappers.hl7_message.parse_message` refused.

    When an MSH can still be read (e.g. unsupported version) the ACK is
    addressed and encoded like the inbound message; otherwise it uses the
    default delimiters, UTF-8 and an empty MSA-2.
    """
    header = peek_header(raw) or _FALLBACK_HEADER
    return build_ack(header, ack_code=ack_code, error=error, control_id=control_id, now=now)


# ----------------------------------------------------------------------------- ACK modes (table 0155)
#
# The one decision of which acknowledgments a message gets (HL7 v2.5 ch. 2.9.2
# original mode, 2.9.3 enhanced mode).  The ingest, the group commit and the
# MLLP client ask here; nothing else reads MSH-15/16.


def is_enhanced_mode(header: Header) -> bool:
    """HL7 v2.5 ch. 2.9.3: enhanced mode when MSH-15 or MSH-16 is valued.

    Whitespace is not a value (a template's padded field): treating ``" "`` as
    valued would send CA then AA to an original-mode sender, which reads the CA
    as its answer and the AA as the answer to its next message.
    """
    return bool(header.accept_ack_type.strip() or header.application_ack_type.strip())


def _wanted(condition: str, success: bool) -> bool:
    cond = condition.strip().upper() or "AL"
    if cond == "NE":
        return False
    if cond == "ER":
        return not success
    if cond == "SU":
        return success
    return True


def acks_to_send(header: Header | None, *, success: bool, strict: bool = True) -> tuple[bool, bool]:
    """(send commit ACK CA/CE/CR, send application ACK AA/AE/AR) for this message.

    Original mode (MSH-15/16 empty, or no readable header) → (False, True).
    Enhanced mode, ``strict`` (``hl7_strict``): as MSH-15 / MSH-16 ask (AL
    always, NE never, ER only on error, SU only on success).  Enhanced mode,
    not strict: every message gets its application ACK, because many HIS fill
    MSH-15/16 with ``AL``/``NE`` from a template yet wait for AA/AE; a commit
    ACK precedes it only when MSH-15 *and* MSH-16 both ask, so a sender never
    receives an answer it does not read.
    """
    if header is None or not is_enhanced_mode(header):
        return False, True
    commit = _wanted(header.accept_ack_type, success)
    application = _wanted(header.application_ack_type, success)
    if strict:
        return commit, application
    return commit and application, True


def commit_ack_code(application_code: str) -> str:
    """The commit ACK of a message answered ``application_code``.

    An AR refuses the message at commit level (CR); an AA or AE message was
    accepted and journaled (CA), its problem is reported by the application ACK.
    """
    return "CR" if application_code == "AR" else "CA"


def build_mode_ack(
    header: Header,
    *,
    ack_code: str,
    error: CarebridgeError | None = None,
    control_id: str,
    strict: bool,
    now: datetime | None = None,
) -> bytes:
    """The ACK in the builder of the mode: hl7apy when ``strict`` (the fast builder if it refuses)."""
    if strict:
        try:
            return build_ack_hl7apy(header, ack_code=ack_code, error=error, control_id=control_id, now=now)
        except Exception:  # hl7apy refuses some odd inputs; the fast builder never does
            pass
    return build_ack(header, ack_code=ack_code, error=error, control_id=control_id, now=now)


# ----------------------------------------------------------------------------- hl7apy (strict mode)


def build_ack_hl7apy(
    header: Header,
    *,
    ack_code: str,
    error: CarebridgeError | None = None,
    control_id: str,
    now: datetime | None = None,
) -> bytes:
    """The same ACK built with hl7apy's object model (slow; used in strict mode)."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.core import Message

    enc = encoding_of(header)
    parts = ack_parts(header, ack_code=ack_code, error=error, control_id=control_id, now=now)
    chars = {
        "FIELD": enc.field,
        "COMPONENT": enc.component,
        "REPETITION": enc.repetition,
        "ESCAPE": enc.escape,
        "SUBCOMPONENT": enc.subcomponent,
        "SEGMENT": "\r",
    }
    version = ".".join(str(p) for p in _version_tuple(header.version or "2.5"))
    msg = Message("ACK", version=version, encoding_chars=chars, validation_level=VALIDATION_LEVEL.TOLERANT)
    for n, value in enumerate(parts[0][3:], start=3):
        if value:
            setattr(msg.msh, f"msh_{n}", value)
    for seg_fields in parts[1:]:
        name = seg_fields[0]
        seg = msg.msa if name == "MSA" else msg.add_segment(name)
        for n, value in enumerate(seg_fields[1:], start=1):
            if value:
                setattr(seg, f"{name.lower()}_{n}", value)
    text: str = msg.to_er7(encoding_chars=chars)
    return text.encode(header.codec or "utf-8", errors="replace")
