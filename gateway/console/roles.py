"""Who may use which console page or action: the one table (issue #19; ISO/IEC 27001:2022 A.5.15, A.8.2).

Least privilege by role: an integration engineer (operator) works messages and
senders and may read raw HL7 to fix a feed; compliance and privacy officers work
patients, the audit trail and privacy requests; a clinician only looks (no
reprocessing, no raw HL7); an administrator manages people, clients and senders
and sees no patient data at all.  Routes name an action from this table
(``gateway.console.web.person("reprocess")``); the navigation shows what the role may open.
"""

from __future__ import annotations

OPERATOR = "operator"
COMPLIANCE = "compliance_officer"
PRIVACY = "privacy_officer"
CLINICIAN = "clinician"
ADMIN = "admin"

#: action -> roles allowed.  Anything not listed here is refused.
ACTIONS: dict[str, frozenset[str]] = {
    "dashboard": frozenset({OPERATOR, COMPLIANCE, PRIVACY, CLINICIAN, ADMIN}),
    # the message journal: metadata (sender, type, status, control id, times, ACK code)
    "messages": frozenset({OPERATOR, CLINICIAN, COMPLIANCE}),
    # the decrypted message (patient data): the engineer who fixes the feed, and the compliance officer
    "raw-hl7": frozenset({OPERATOR, COMPLIANCE}),
    "reprocess": frozenset({OPERATOR}),
    "dead-letters": frozenset({OPERATOR}),
    "redeliver": frozenset({OPERATOR}),
    "senders": frozenset({OPERATOR, ADMIN}),
    "senders-edit": frozenset({OPERATOR, ADMIN}),
    "patients": frozenset({COMPLIANCE, PRIVACY}),
    "audit": frozenset({COMPLIANCE}),
    "privacy": frozenset({PRIVACY}),
    "privacy-edit": frozenset({PRIVACY}),
    "clients": frozenset({ADMIN}),
    "users": frozenset({ADMIN}),
}


def roles_for(action: str) -> tuple[str, ...]:
    """The roles allowed ``action`` (an unknown action allows nobody: deny by default)."""
    return tuple(sorted(ACTIONS.get(action, frozenset())))


def may(role: str, action: str) -> bool:
    return role in ACTIONS.get(action, frozenset())
