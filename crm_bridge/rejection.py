"""What a CRM learns when the HIS refuses its booking: a category and an HL7 error code, no text.

Why (Decree 356/2025/ND-CP Art. 7 minimum necessary; Law 91/2025/QH15 Art.
26): the HIS's answer texts (ERR-8 user message, ERR-3 text, MSA-3, free-text
reasons) are written by people and systems carebridge does not control, and
real ones name the patient (CCCD, BHYT, phone, name).  The CRM therefore gets
carebridge's own vocabulary: a category from the HL7 v2 table 0357 error code
(ERR-3.1) and the acknowledgment code, never a character the HIS wrote.  The
HIS's text stays sealed in ``crm_his_outbox.last_error`` for the clinic.
"""

from __future__ import annotations

import re

#: HL7 v2 table 0357 (message error condition codes) → category the CRM may act on
_CATEGORIES = {
    "0": "accepted",
    "100": "message-error",
    "101": "message-error",
    "102": "message-error",
    "103": "message-error",
    "200": "unsupported",
    "201": "unsupported",
    "202": "unsupported",
    "203": "unsupported",
    "204": "unknown-patient-or-record",
    "205": "duplicate",
    "206": "record-locked",
    "207": "his-internal-error",
}
CATEGORIES = frozenset(_CATEGORIES.values()) | {"refused", "his-error", "his-unreachable"}
_CODE = re.compile(r"^\d{1,4}$")


def error_code(value: str | None) -> str | None:
    """ERR-3.1 when it is a table-0357-shaped number, else ``None`` (never the HIS's text)."""
    code = (value or "").strip()
    return code if _CODE.match(code) else None


def rejection_reason(ack_code: str, code: str | None) -> dict[str, str | None]:
    """``appointment.rejected.data.reason``: category + HL7 error code (codes only)."""
    category = _CATEGORIES.get(code or "")
    if category is None:
        category = "refused" if ack_code in ("AR", "CR") else "his-error"
    return {"category": category, "hl7_error_code": code}


def unreachable_reason() -> dict[str, str | None]:
    return {"category": "his-unreachable", "hl7_error_code": None}


def err3_code(raw: bytes) -> str | None:
    """ERR-3.1 of an ACK (HL7 v2.5+ layout), read without decoding any free text."""
    for line in raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r").split(b"\r"):
        if line.startswith(b"ERR") and len(line) > 3:
            sep = line[3:4]
            fields = line.split(sep)
            if len(fields) > 3:
                component = fields[3].split(b"^", 1)[0]
                found = error_code(component.decode("ascii", errors="replace"))
                if found:
                    return found
    return None
