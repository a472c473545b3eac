"""Strict validation mode: hl7apy with ``VALIDATION_LEVEL.STRICT``.

Not on the hot path (hl7apy is far too slow for it; docs/benchmarks.md).  It is
used for senders on probation or for ``replay --strict``: on top of the fast
tokenizer's checks it enforces the HL7 message structures (required segments
and fields, cardinality, data type formats) of the declared version, see
https://crs4.github.io/hl7apy/tutorial/index.html#validation.

Every hl7apy failure is turned into :class:`~common.errors.InvalidInput` with
an HL7 location (``SCH-6``, ``PID-7``...) so the ACK carries an ERR-2.
"""

from __future__ import annotations

import re

from common import InvalidInput
from mappers.hl7_message import Hl7Message, parse_message

# Message structure (MSH-9.3) by trigger, for senders that leave it empty (v2.3).
STRUCTURES = {
    "ADT^A01": "ADT_A01",
    "ADT^A04": "ADT_A01",
    "ADT^A08": "ADT_A01",
    "ADT^A13": "ADT_A01",
    "ADT^A02": "ADT_A02",
    "ADT^A03": "ADT_A03",
    "ADT^A05": "ADT_A05",
    "ADT^A28": "ADT_A05",
    "ADT^A31": "ADT_A05",
    "ADT^A06": "ADT_A06",
    "ADT^A07": "ADT_A06",
    "ADT^A11": "ADT_A09",
    "ADT^A40": "ADT_A39",
    **{f"SIU^S{n}": "SIU_S12" for n in (12, 13, 14, 15, 16, 17, 26)},
}

_CHILD_RE = re.compile(r"\b([A-Z][A-Z0-9]{2})_(\d+)\b")
_SEGMENT_RE = re.compile(r"\.([A-Z][A-Z0-9]{2})\b")
_VALUE_RE = re.compile(r"^(\S+) is not")


def parse_strict(raw: bytes, *, default_charset: str = "utf-8") -> Hl7Message:
    """Tokenize (same errors as :func:`parse_message`) then validate strictly."""
    msg = parse_message(raw, default_charset=default_charset)
    validate_strict(msg)
    return msg


def validate_strict(msg: Hl7Message) -> None:
    """Raise :class:`InvalidInput` (with a location) if hl7apy's strict validation fails."""
    from hl7apy.consts import VALIDATION_LEVEL
    from hl7apy.parser import parse_message as hl7apy_parse

    try:
        parsed = hl7apy_parse(
            _er7_for_hl7apy(msg), validation_level=VALIDATION_LEVEL.STRICT, find_groups=True
        )
        parsed.validate()
    except Exception as exc:  # hl7apy raises its own tree plus ValueError/TypeError
        text = str(exc) or type(exc).__name__
        raise InvalidInput(
            f"strict validation failed: {_without_values(msg, text)}", location=_locate(msg, text)
        ) from None


def _er7_for_hl7apy(msg: Hl7Message) -> str:
    """CR-joined text, with the message structure made explicit when the sender left it out.

    hl7apy picks the structure from MSH-9; v2.3 has no MSH-9.3 and no
    ``ADT_A04`` structure, so ``ADT^A04`` is validated as ``ADT^A01``.
    """
    fs = msg.encoding.field
    lines = []
    for seg in msg.all_segments:
        fields = list(seg.fields)
        if seg.name == "MSH":
            h = msg.header
            event = f"{h.message_code}^{h.trigger_event}"
            if not h.structure and event in STRUCTURES and len(fields) > 9:
                c = msg.encoding.component
                structure = STRUCTURES[event]
                if h.version == "2.3":  # MSH-9 has two components: name the structure's own event
                    fields[9] = structure.replace("_", c)
                else:
                    fields[9] = c.join([h.message_code, h.trigger_event, structure])
            lines.append("MSH" + fs + fs.join(fields[2:]))
        else:
            lines.append(fs.join(fields))
    return "\r".join(lines)


def _without_values(msg: Hl7Message, text: str) -> str:
    """hl7apy's text with every field value of the message replaced by ``<value>``.

    Why: the text goes to the HL7 journal and the stored ACK, which must name the
    field and the rule, never the value (a rejected birth date or name is
    personal data: issue #18 item 5).  Longest values first, so a component is
    not left behind when its field is masked.
    """
    values: set[str] = set()
    for seg in msg.all_segments:
        for n in range(1, len(seg.fields)):
            if seg.name == "MSH" and n <= 2:
                continue
            raw = seg.raw(n)
            values.add(raw)
            for part in raw.replace(msg.encoding.repetition, msg.encoding.component).split(
                msg.encoding.component
            ):
                values.update(part.split(msg.encoding.subcomponent))
    for value in sorted((v for v in values if len(v.strip()) >= 2), key=len, reverse=True):
        text = text.replace(value, "<value>")
    return text


def _locate(msg: Hl7Message, text: str) -> str | None:
    """Best-effort HL7 location from an hl7apy message."""
    m = _CHILD_RE.search(text)
    if m:
        return f"{m.group(1)}-{int(m.group(2))}"
    m = _SEGMENT_RE.search(text)
    if m:
        return m.group(1)
    m = _VALUE_RE.match(text)
    if m:  # "19851345 is not an HL7 valid date value": find the field that holds it
        value = m.group(1)
        for seg in msg.all_segments:
            for n in range(1, len(seg.fields)):
                if seg.name == "MSH" and n <= 2:
                    continue
                if value in seg.raw(n).split(msg.encoding.component):
                    return f"{seg.name}-{n}"
    return None
