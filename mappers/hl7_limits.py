"""Receiver rules checked on a tokenized message before anything maps or stores it.

The tokenizer (:mod:`mappers.hl7_message`) reads whatever is well formed; these
rules refuse, cheaply and with an answer that names the field, the messages a
receiver must not process (issue #17 item 6):

* a NUL (U+0000) anywhere: no HL7 v2 data type allows it (v2.5 ch. 2.7) and a
  PostgreSQL ``text`` column cannot hold it -- AR, table 0357 code 102, at the field;
* an empty MSH-10: required, and the key of duplicate detection (v2.5 ch. 2.14.9.10)
  -- AR, code 101, at MSH-10;
* more segments than ``max_segments`` -- AR, code 100;
* a field with more repetitions than ``max_repetitions`` -- AR, code 104, at the field.

The limits bound the work one message can cause (mapping, identifier claims, index
rows) whatever the sender puts in it; the frame size alone does not, since 1 MiB
holds tens of thousands of repetitions.  Each check is one pass over the text.
"""

from __future__ import annotations

from common import CarebridgeError, ForbiddenCharacter, HeaderFieldMissing, PayloadTooLarge, TooManySegments
from mappers.hl7_message import Hl7Message, Segment


def _nul_location(segments: list[Segment]) -> str:
    for seg in segments:
        for n, value in enumerate(seg.fields):
            if n and "\x00" in value:
                return f"{seg.name}-{n}"
    return "MSH"


def message_problem(msg: Hl7Message, *, max_segments: int, max_repetitions: int) -> CarebridgeError | None:
    """The first rule ``msg`` breaks (see the module docstring), or None."""
    if "\x00" in msg.text:
        where = _nul_location(msg.all_segments)
        return ForbiddenCharacter(
            f"NUL character (U+0000) in {where} is not allowed in HL7 data", location=where
        )
    if not msg.header.control_id.strip():
        return HeaderFieldMissing("MSH-10 (message control id) is required and empty", location="MSH-10")
    count = len(msg.all_segments)
    if count > max_segments:
        return TooManySegments(
            f"message has {count} segments; the limit is {max_segments} (CAREBRIDGE_HL7_MAX_SEGMENTS)"
        )
    rep = msg.encoding.repetition
    if msg.text.count(rep) < max_repetitions:  # no field can be over the limit
        return None
    for seg in msg.all_segments:
        first = 3 if seg.name == "MSH" else 1  # MSH-1/MSH-2 are the delimiters themselves
        for n in range(first, len(seg.fields)):
            repetitions = seg.fields[n].count(rep) + 1
            if repetitions > max_repetitions:
                return PayloadTooLarge(
                    f"{seg.name}-{n} has {repetitions} repetitions; the limit is {max_repetitions}"
                    " (CAREBRIDGE_HL7_MAX_REPETITIONS)",
                    location=f"{seg.name}-{n}",
                )
    return None
