"""Fast, split-based HL7 v2 tokenizer (the MLLP hot path).

Why not hl7apy here: hl7apy builds a full typed tree, orders of magnitude
slower than the listener's rate needs (docs/benchmarks.md, HL7 parsing).  This
module does the minimum an ER7 reader must do and nothing more:

* strips an optional UTF-8 BOM and accepts CR, LF or CRLF segment ends
  (HL7 v2.5 ch. 2.5.1 mandates CR; real feeds do not);
* reads the delimiters (MSH-1/MSH-2) and the character set (MSH-18) from the
  raw bytes first and decodes the whole message with it
  (:mod:`mappers.hl7_encoding`);
* keeps every segment (Z-segments too) but interprets none of them;
* decodes escape sequences lazily, when a value is read, so that an escaped
  delimiter never splits a field.

Field numbering follows the standard: ``seg.field(n)`` is ``SEG-n``; for MSH,
MSH-1 is the field separator and MSH-2 the encoding characters.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from common import RECORD_NUMBER_TYPES, SECONDARY_IDENTIFIER_TYPES, UnparseableMessage, UnsupportedVersion
from mappers.hl7_encoding import (
    CHARSETS,
    EncodingChars,
    UndecodableMessage,
    codec_for,
    encoding_from,
    unescape,
)

# CHARSETS, EncodingChars and unescape stay importable from here for callers written before
# mappers.hl7_encoding existed (gateway/mllp/client.py); new code imports them from there.
__all__ = [
    "CHARSETS",
    "EncodingChars",
    "Header",
    "Hl7Message",
    "Repetition",
    "Segment",
    "cx_authority",
    "parse_message",
    "patient_key",
    "peek_header",
    "primary_cx",
    "unescape",
]

_BOM = b"\xef\xbb\xbf"

_VERSION_RE = re.compile(r"2\.[3-8](\.\d+)*")
_SEGMENT_NAME_RE = re.compile(r"[A-Z][A-Z0-9]{2}")
_PATH_RE = re.compile(r"([A-Z][A-Z0-9]{2})-(\d+)(?:\[(\d+)\])?(?:\.(\d+)(?:\.(\d+))?)?")


@dataclass(frozen=True, slots=True)
class Header:
    """The MSH values the gateway needs (routing, ACK building, journaling)."""

    sending_application: str  # MSH-3.1
    sending_facility: str  # MSH-4.1
    receiving_application: str  # MSH-5.1
    receiving_facility: str  # MSH-6.1
    datetime: str  # MSH-7.1, raw DTM
    message_code: str  # MSH-9.1
    trigger_event: str  # MSH-9.2
    structure: str  # MSH-9.3
    control_id: str  # MSH-10
    processing_id: str  # MSH-11.1
    version: str  # MSH-12.1
    accept_ack_type: str  # MSH-15
    application_ack_type: str  # MSH-16
    charset: str  # MSH-18.1 as sent ("" when absent)
    codec: str  # Python codec actually used to decode the message
    field_separator: str = "|"  # MSH-1
    encoding_characters: str = "^~\\&"  # MSH-2


class Repetition:
    """One repetition of a field; components are decoded on access."""

    __slots__ = ("_codec", "_enc", "_parts", "raw")

    def __init__(self, raw: str, enc: EncodingChars, codec: str) -> None:
        self.raw = raw
        self._enc = enc
        self._codec = codec
        self._parts: list[str] | None = None  # split on first component access: mappers read several

    def __bool__(self) -> bool:
        return bool(self.raw)

    def __repr__(self) -> str:
        return f"Repetition({self.raw!r})"

    @property
    def text(self) -> str:
        """The whole repetition, decoded (meaningful for primitive fields)."""
        return unescape(self.raw, self._enc, self._codec)

    def component(self, c: int, sub: int = 1) -> str:
        """``c``-th component (1-based), ``sub``-th subcomponent, decoded; "" if absent or ``""``."""
        comps = self._parts
        if comps is None:
            comps = self._parts = self.raw.split(self._enc.component)
        if c < 1 or c > len(comps):
            return ""
        value = comps[c - 1]
        if self._enc.subcomponent in value:
            subs = value.split(self._enc.subcomponent)
            value = subs[sub - 1] if 0 < sub <= len(subs) else ""
        elif sub != 1:
            return ""
        if value == '""':  # HL7 explicit null: "no value" for a mapper
            return ""
        return unescape(value, self._enc, self._codec) if self._enc.escape in value else value

    def components(self) -> list[str]:
        """All components, decoded (subcomponent delimiters left in place)."""
        return [unescape(v, self._enc, self._codec) for v in self.raw.split(self._enc.component)]


class Segment:
    """A segment: ``fields[n]`` is SEG-n (``fields[0]`` is the segment name)."""

    __slots__ = ("_codec", "_enc", "_single", "fields", "name")

    def __init__(self, name: str, fields: list[str], enc: EncodingChars, codec: str) -> None:
        self.name = name
        self.fields = fields
        self._enc = enc
        self._codec = codec
        self._single: dict[int, Repetition] = {}  # unrepeated fields, kept for their next component

    def __repr__(self) -> str:
        return f"Segment({self.name!r}, {len(self.fields) - 1} fields)"

    def raw(self, n: int) -> str:
        """SEG-n exactly as sent (escapes not decoded); "" if absent."""
        return self.fields[n] if 0 < n < len(self.fields) else ""

    def _literal(self, n: int) -> bool:
        return self.name == "MSH" and n <= 2

    def field(self, n: int) -> str:
        """SEG-n as text with escapes decoded: use for primitive fields (MSH-10, PID-7)."""
        value = self.raw(n)
        if self._literal(n) or self._enc.escape not in value:
            return value
        return unescape(value, self._enc, self._codec)

    def repetitions(self, n: int) -> list[Repetition]:
        """Non-empty repetitions of SEG-n (an empty field gives [])."""
        value = self.raw(n)
        if not value:
            return []
        if self._literal(n):
            return [Repetition(value, self._enc, self._codec)]
        return [Repetition(r, self._enc, self._codec) for r in value.split(self._enc.repetition) if r]

    def repetition(self, n: int, rep: int = 1) -> Repetition:
        """The ``rep``-th repetition of SEG-n (an empty one when absent)."""
        value = self.raw(n)
        parts = [value] if self._literal(n) else value.split(self._enc.repetition)
        raw = parts[rep - 1] if 0 < rep <= len(parts) else ""
        return Repetition(raw, self._enc, self._codec)

    def component(self, n: int, c: int = 1, sub: int = 1, *, rep: int = 1) -> str:
        """SEG-n[rep].c.sub decoded; "" if absent."""
        value = self.raw(n)
        if not value:
            return ""
        if self._literal(n):
            return value if c == 1 and sub == 1 else ""
        if self._enc.repetition in value or rep != 1:
            return self.repetition(n, rep).component(c, sub)
        single = self._single.get(n)
        if single is None:
            single = self._single[n] = Repetition(value, self._enc, self._codec)
        return single.component(c, sub)


class Hl7Message:
    """A tokenized message.  Segment order is preserved; nothing is interpreted."""

    __slots__ = ("_index", "all_segments", "charset", "codec", "encoding", "header", "text")

    def __init__(
        self, text: str, encoding: EncodingChars, charset: str, codec: str, segments: list[Segment]
    ) -> None:
        self.text = text
        self.encoding = encoding
        self.charset = charset
        self.codec = codec
        self.all_segments = segments
        index: dict[str, list[Segment]] = {}
        for seg in segments:
            index.setdefault(seg.name, []).append(seg)
        self._index = index
        self.header = _header(segments[0], charset, codec, encoding)

    def segments(self, name: str) -> list[Segment]:
        return self._index.get(name, [])

    def segment(self, name: str) -> Segment | None:
        found = self._index.get(name)
        return found[0] if found else None

    def get(self, path: str) -> str:
        """Value at a terser-like path: ``PID-7``, ``MSH-9.2``, ``PID-3[2].4``, ``PID-3[1].4.2``.

        Without a component the whole field (or repetition) is returned decoded.
        The first segment of that name is used; "" when anything is absent.
        """
        m = _PATH_RE.fullmatch(path)
        if m is None:
            raise ValueError(f"bad HL7 path {path!r}")
        seg = self.segment(m.group(1))
        if seg is None:
            return ""
        n = int(m.group(2))
        rep = int(m.group(3)) if m.group(3) else None
        comp = int(m.group(4)) if m.group(4) else None
        sub = int(m.group(5)) if m.group(5) else 1
        if comp is None:
            return seg.field(n) if rep is None else seg.repetition(n, rep).text
        return seg.component(n, comp, sub, rep=rep or 1)


def _header(msh: Segment, charset: str, codec: str, enc: EncodingChars) -> Header:
    c = msh.component
    return Header(
        sending_application=c(3),
        sending_facility=c(4),
        receiving_application=c(5),
        receiving_facility=c(6),
        datetime=c(7),
        message_code=c(9, 1),
        trigger_event=c(9, 2),
        structure=c(9, 3),
        control_id=msh.field(10),
        processing_id=c(11),
        version=c(12),
        accept_ack_type=msh.field(15),
        application_ack_type=msh.field(16),
        charset=charset,
        codec=codec,
        field_separator=enc.field,
        encoding_characters=enc.msh2,
    )


def parse_message(raw: bytes, *, default_charset: str = "utf-8") -> Hl7Message:
    """Tokenize one ER7 message (MLLP framing already removed).

    Raises :class:`UnparseableMessage` (ACK AR) when there is no MSH at the
    start, the delimiters or bytes are unusable, or a segment is malformed;
    :class:`UnsupportedVersion` when MSH-12 is outside 2.3-2.8.
    """
    message = _tokenize(raw, default_charset)
    version = message.header.version
    if not _VERSION_RE.fullmatch(version):
        raise UnsupportedVersion(f"HL7 version {version or '(empty)'} is not supported", location="MSH-12")
    return message


def peek_header(raw: bytes, *, default_charset: str = "utf-8") -> Header | None:
    """Best-effort MSH of a message that failed :func:`parse_message` (to address the ACK), or None.

    When the message cannot be decoded (unknown MSH-18, bytes invalid in its
    charset, a malformed later segment), the MSH line alone is read as ASCII --
    MSH-3 to MSH-12 are ASCII whatever MSH-18 says -- so the AR still names the
    sender and echoes MSH-10 in MSA-2 (HL7 v2.5 ch. 2.14.8).
    """
    try:
        return _tokenize(raw, default_charset).header
    except UnparseableMessage:
        return _msh_only(raw)


def _msh_only(raw: bytes) -> Header | None:
    data = bytes(raw)
    data = (data[3:] if data.startswith(_BOM) else data).lstrip(b"\r\n\t \x0b")
    if not data.startswith(b"MSH") or len(data) < 8:
        return None
    try:
        enc = encoding_from(data)
    except UnparseableMessage:
        return None
    line = data.replace(b"\n", b"\r").split(b"\r", 1)[0].decode("ascii", errors="replace")
    parts = line.split(enc.field)
    parts.insert(1, enc.field)
    msh = Segment("MSH", parts, enc, "ascii")
    label = msh.component(18).strip()
    return _header(msh, label, CHARSETS.get(label.upper(), "ascii"), enc)


def _tokenize(raw: bytes, default_charset: str) -> Hl7Message:
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise UnparseableMessage("message must be bytes")
    data = bytes(raw)
    bom = data.startswith(_BOM)
    if bom:
        data = data[3:]
    data = data.lstrip(b"\r\n\t \x0b")
    if not data.startswith(b"MSH") or len(data) < 8:
        raise UnparseableMessage("message does not start with an MSH segment", location="MSH")
    enc = encoding_from(data)
    eol = len(data)
    for terminator in (b"\r", b"\n"):
        pos = data.find(terminator)
        if 0 <= pos < eol:
            eol = pos
    charset, codec = codec_for(data[:eol], enc, default_charset)
    if bom:
        codec = "utf-8"  # the BOM is proof of UTF-8 whatever MSH-18 claims
    try:
        codecs.lookup(codec)
        text = data.decode(codec)
    except (UnicodeDecodeError, LookupError):
        raise UndecodableMessage(f"message is not valid {codec}", location="MSH-18") from None
    fs = enc.field
    segments: list[Segment] = []
    for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r"):
        if not line.strip():
            continue
        name = line[:3]
        if not _SEGMENT_NAME_RE.fullmatch(name) or (len(line) > 3 and line[3] != fs):
            where = f"segment {len(segments) + 1}"
            raise UnparseableMessage(f"malformed segment #{len(segments) + 1}", location=where)
        parts = line.split(fs)
        if name == "MSH":
            if segments:
                raise UnparseableMessage(
                    "more than one MSH segment (batches are not accepted)", location="MSH"
                )
            parts.insert(1, fs)
        segments.append(Segment(name, parts, enc, codec))
    return Hl7Message(text, enc, charset, codec, segments)


def primary_cx(pid: Segment) -> Repetition | None:
    """The PID-3 repetition used as the patient's key: the facility's record number.

    Type MR first, then PI, then the first repetition whose type is not a
    person-level number (CCCD, BHYT, passport, SSN: ``common.SECONDARY_IDENTIFIER_TYPES``);
    None when PID-3 holds only such numbers.  Why: the same person may hold two
    record numbers (a duplicate registration, fixed by ADT^A40), so a national
    number must never decide which Patient a message updates.
    """
    reps = [r for r in pid.repetitions(3) if r.component(1).strip()]
    kinds = [r.component(5).strip().upper() for r in reps]
    for wanted in RECORD_NUMBER_TYPES:
        for rep, kind in zip(reps, kinds, strict=True):
            if kind == wanted:
                return rep
    return next((r for r, k in zip(reps, kinds, strict=True) if k not in SECONDARY_IDENTIFIER_TYPES), None)


def cx_authority(rep: Repetition, default: str) -> str:
    """CX-4 assigning authority: HD-1 namespace, else HD-2 universal id, else ``default``."""
    return rep.component(4, 1).strip() or rep.component(4, 2).strip() or default


def patient_key(msg: Hl7Message) -> str | None:
    """``<authority>|<id>`` of the patient (PID-3, MR preferred) or None without PID-3.

    The MLLP listener uses it to process messages of one patient in order.
    """
    pid = msg.segment("PID")
    if pid is None:
        return None
    rep = primary_cx(pid)
    if rep is None:
        return None
    return f"{cx_authority(rep, msg.header.sending_facility)}|{rep.component(1).strip()}"
