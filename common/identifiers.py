"""Identifier ``system`` URIs carebridge assigns (documented in docs/identifiers.md).

Every business identifier gets a stable system so that upserts are keyed by
``system|value`` and never by guessing.  Facility-scoped identifiers (record
numbers, visit numbers, appointment numbers) embed the assigning authority
(HL7 CX-4 / EI-2) so two hospitals' ``BN000123`` never collide.
"""

from __future__ import annotations

BASE = "https://id.carebridge.vn"

CCCD_SYSTEM = f"{BASE}/cccd"
"""Căn cước công dân: 12-digit national citizen id (HL7 identifier type NI)."""

BHYT_SYSTEM = f"{BASE}/bhyt"
"""Bảo hiểm y tế: 15-character health-insurance card number (identifier type HC)."""

DIRECT_IDENTIFIER_SYSTEMS = frozenset({CCCD_SYSTEM, BHYT_SYSTEM})
"""Systems whose values are direct identifiers: encrypted at rest, never sent to a CRM."""


def _slug(authority: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in authority.strip())
    return cleaned or "unknown"


def mrn_system(authority: str) -> str:
    """Hospital record number (PID-3 type MR) issued by ``authority``."""
    return f"{BASE}/mrn/{_slug(authority)}"


def visit_system(authority: str) -> str:
    """Visit number (PV1-19) issued by ``authority``."""
    return f"{BASE}/visit/{_slug(authority)}"


def alternate_visit_system(authority: str) -> str:
    """Alternate visit id (PV1-50) issued by ``authority`` (a second number for the same visit)."""
    return f"{BASE}/visit-alternate/{_slug(authority)}"


def placer_appointment_system(authority: str) -> str:
    """Placer appointment id (SCH-1)."""
    return f"{BASE}/appointment/placer/{_slug(authority)}"


def filler_appointment_system(authority: str) -> str:
    """Filler appointment id (SCH-2)."""
    return f"{BASE}/appointment/filler/{_slug(authority)}"


def identifier_type_system(authority: str) -> str:
    """Other identifier types under an authority (PID-3 with a type not listed above)."""
    return f"{BASE}/other/{_slug(authority)}"


def practitioner_system(authority: str) -> str:
    """Staff/practitioner id (HL7 XCN-1, e.g. PV1-7, AIP-3) issued by ``authority``."""
    return f"{BASE}/practitioner/{_slug(authority)}"
