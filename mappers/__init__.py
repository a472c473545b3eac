"""HL7 v2 mapping: what the other packages may import (``from mappers import ...``).

Everything else in the package is internal (import-linter ``protected``
contract in pyproject.toml).
"""

from __future__ import annotations

from mappers.ack import (
    COMMIT_ACK_CODES,
    acks_to_send,
    build_ack,
    build_ack_hl7apy,
    build_fallback_ack,
    build_mode_ack,
    commit_ack_code,
)
from mappers.event_time import event_instant
from mappers.hl7_content import canonical_content
from mappers.hl7_limits import message_problem
from mappers.hl7_message import (
    CHARSETS,
    EncodingChars,
    Header,
    Hl7Message,
    parse_message,
    patient_key,
    peek_header,
    unescape,
)
from mappers.outbound_siu import (
    appointment_to_siu_s12,
)
from mappers.result import (
    MappingResult,
)
from mappers.router import (
    map_message,
)

__all__ = [
    "CHARSETS",
    "COMMIT_ACK_CODES",
    "EncodingChars",
    "Header",
    "Hl7Message",
    "MappingResult",
    "acks_to_send",
    "appointment_to_siu_s12",
    "build_ack",
    "build_ack_hl7apy",
    "build_fallback_ack",
    "build_mode_ack",
    "canonical_content",
    "commit_ack_code",
    "event_instant",
    "map_message",
    "message_problem",
    "parse_message",
    "patient_key",
    "peek_header",
    "unescape",
]
