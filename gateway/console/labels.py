"""Codes shown to people: the one table of their English labels (the msgids), Vietnamese in the catalog.

Why one table: the access page, the printable page and the CSV/XLSX exports
must name a purpose of use, an action or an outcome the same way; a reviewer
reads "Điều trị", not ``TREAT`` (issue #19).  The English labels are the
gettext message ids, so ``locale/vi/LC_MESSAGES/messages.po`` is the one place
the Vietnamese lives.  Purposes of use are HL7 v3 PurposeOfUse codes
(``gateway.auth.purpose``), actions and outcomes FHIR R4 AuditEvent codes.
"""

from __future__ import annotations

from collections.abc import Callable

from consent import PURPOSE_LABELS
from gateway.auth.purpose import CODES


def english(bilingual: str) -> str:
    """The English half of a ``"Tiếng Việt / English"`` label of ``consent.PURPOSE_LABELS``."""
    return bilingual.rpartition(" / ")[2]


#: v3 PurposeOfUse (``AuditEvent.purposeOfEvent``) and consent purposes: the patient's access
#: letter and the console name a purpose the same way, so both read ``consent.PURPOSE_LABELS``
#: (its Vietnamese halves join the catalog in ``gateway.console.i18n``).
PURPOSE_OF_USE: dict[str, str] = {code: english(PURPOSE_LABELS[code]) for code in CODES}
#: FHIR AuditEvent.action (http://hl7.org/fhir/audit-event-action).
ACTIONS: dict[str, str] = {"C": "Create", "R": "Read", "U": "Update", "D": "Delete", "E": "Search or execute"}
#: FHIR AuditEvent.outcome (http://hl7.org/fhir/audit-event-outcome).
OUTCOMES: dict[str, str] = {
    "0": "Success",
    "4": "Minor failure",
    "8": "Serious failure",
    "12": "Major failure",
}
#: consent purposes (``consent.PURPOSES``).
CONSENT_PURPOSES: dict[str, str] = {
    code: english(PURPOSE_LABELS[code]) for code in ("appointment-reminder", "post-visit-care", "marketing")
}
#: consent channels (``consent.CHANNELS``).
CHANNELS: dict[str, str] = {
    "counter": "At the counter",
    "web": "Web form",
    "app": "Mobile app",
    "zalo": "Zalo",
    "sms": "SMS",
    "phone": "Phone call",
    "crm": "Through the CRM",
    "paper": "Paper form",
}
#: person roles and OAuth client roles (those of people are in the catalog already).
ROLES: dict[str, str] = {
    "his_integration": "HIS integration",
    "hl7-sender": "HIS sender (HL7 v2)",
    "crm": "CRM",
    "patient": "Patient",
}

TABLES: tuple[dict[str, str], ...] = (PURPOSE_OF_USE, ACTIONS, OUTCOMES, CONSENT_PURPOSES, CHANNELS, ROLES)


def label(table: dict[str, str], code: str, gettext: Callable[[str], str]) -> str:
    """The label of ``code`` in the reader's language; an unknown code is shown as it is."""
    english = table.get(code)
    return gettext(english) if english else code
