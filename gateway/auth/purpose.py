"""Purpose of use of every API access: the ``X-Purpose-Of-Use`` header, defaulted and bounded per role.

Why: IHE BALP and FHIR AuditEvent record *why* data was accessed
(``AuditEvent.purposeOfEvent`` and ``agent.purposeOfUse``), and Law 91/2025/QH15
Art. 9 and Decree 356/2025/ND-CP Art. 7 bind processing to a declared purpose:
a read without one cannot be judged afterwards.  The codes are HL7 v3
PurposeOfUse (value set ``v3-PurposeOfUse``, code system
http://terminology.hl7.org/CodeSystem/v3-ActReason).  A caller may state one
per request (``X-Purpose-Of-Use: TREAT`` or ``<system>|TREAT``); without the
header its role's default applies; a code its role may not state is refused
(403 naming the header), so a CRM cannot claim treatment and a clinician
cannot claim marketing.  This table is the only place the pairs are decided.
"""

from __future__ import annotations

from typing import Final

from common import Forbidden

HEADER: Final = "X-Purpose-Of-Use"
SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"

#: The v3 PurposeOfUse codes carebridge knows (a subset of the value set: what its roles do).
CODES: Final[dict[str, str]] = {
    "TREAT": "treatment",
    "ETREAT": "emergency treatment",
    "HOPERAT": "healthcare operations",
    "HPAYMT": "healthcare payment",
    "PATRQT": "patient requested",
    "HRESCH": "healthcare research",
    "HMARKT": "healthcare marketing",
    "PUBHLTH": "public health",
    "HCOMPL": "health compliance",
    "HLEGAL": "legal",
    "HSYSADMIN": "health system administration",
    "HQUALIMP": "health quality improvement",
}

#: role → (default, every code the role may state).  Deny by default: an unknown role may state nothing.
ROLE_PURPOSES: Final[dict[str, tuple[str, frozenset[str]]]] = {
    "his_integration": ("TREAT", frozenset({"TREAT", "ETREAT", "HOPERAT", "HPAYMT"})),
    "clinician": ("TREAT", frozenset({"TREAT", "ETREAT", "HOPERAT", "HQUALIMP", "PUBHLTH"})),
    "compliance_officer": ("HCOMPL", frozenset({"HCOMPL", "HLEGAL", "HOPERAT"})),
    # appointment reminders and post-visit care are operations; marketing needs its own consent
    "crm": ("HOPERAT", frozenset({"HOPERAT", "HMARKT"})),
    "admin": ("HSYSADMIN", frozenset({"HSYSADMIN"})),
    "patient": ("PATRQT", frozenset({"PATRQT"})),
    "privacy_officer": ("HCOMPL", frozenset({"HCOMPL", "PATRQT", "HLEGAL", "HOPERAT"})),
    # console people (issue #19): the integration engineer keeps the feeds running
    "operator": ("HSYSADMIN", frozenset({"HSYSADMIN", "HOPERAT"})),
}


def _code_of(value: str) -> str:
    system, sep, code = value.strip().rpartition("|")
    if sep and system != SYSTEM:
        raise Forbidden(f"{HEADER} must be a code of {SYSTEM}", location=HEADER)
    return code.strip().upper()


def purpose_for(role: str, header: str | None) -> str:
    """The v3-ActReason code this request is made for; :class:`Forbidden` names the header."""
    default, allowed = ROLE_PURPOSES.get(role, ("", frozenset()))
    if header is None or not header.strip():
        if not default:
            raise Forbidden(f"role '{role}' has no purpose of use; state one in {HEADER}", location=HEADER)
        return default
    code = _code_of(header)
    if code not in CODES:
        raise Forbidden(f"{HEADER} '{code[:20]}' is not a known PurposeOfUse code", location=HEADER)
    if code not in allowed:
        choices = ", ".join(sorted(allowed)) or "none"
        raise Forbidden(
            f"{HEADER} {code} is not allowed for role '{role}' (allowed: {choices})", location=HEADER
        )
    return code
