"""One version of a Consent as the compliance officer's timeline shows it.

Why (Law 91/2025/QH15 Art. 9: consent per purpose, explicit, provable and
withdrawable): proving a consent means showing every answer the patient gave --
granted or withdrawn, for which purpose and which CRM, through which channel,
who entered it and when -- not only the current state the policy decision point
uses.  The profile (purpose codes, recipient identifiers, the channel and
recorded-by extensions) belongs to this package (``consent.purposes``,
``consent.grants``), so reading it back lives here too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consent.grants import RECORDED_AT_URL, RECORDED_BY_URL
from consent.purposes import CHANNEL_URL, consent_purposes, consent_recipients


@dataclass(frozen=True)
class ConsentStep:
    """What one Consent version says."""

    consent_id: str
    version: int
    granted: bool  # permit and active; False: a withdrawal, opt-out, or a consent no longer in force
    status: str  # FHIR Consent.status (active, inactive, rejected, entered-in-error, ...), "deleted"
    purposes: tuple[str, ...]
    recipients: tuple[str, ...]  # CRM client ids; empty: every configured CRM
    channel: str
    recorded_by: str
    recorded_at: str  # FHIR dateTime as stamped by the clinic endpoint ("" when absent)
    answered: str  # Consent.dateTime: when the patient answered
    stored_us: int  # when carebridge stored this version


def _extension(resource: dict[str, Any], url: str) -> dict[str, Any]:
    for ext in resource.get("extension") or ():
        if isinstance(ext, dict) and ext.get("url") == url:
            return ext
    return {}


def consent_step(
    consent_id: str, version: int, stored_us: int, resource: dict[str, Any] | None
) -> ConsentStep:
    """The facts of one version (``resource`` None: the version is a deletion)."""
    if resource is None:
        return ConsentStep(consent_id, version, False, "deleted", (), (), "", "", "", "", stored_us)
    status = str(resource.get("status") or "")
    permit = (resource.get("provision") or {}).get("type") == "permit"
    return ConsentStep(
        consent_id=consent_id,
        version=version,
        granted=permit and status == "active",
        status=status,
        purposes=tuple(consent_purposes(resource)),
        recipients=tuple(consent_recipients(resource)),
        channel=str(_extension(resource, CHANNEL_URL).get("valueCode") or ""),
        recorded_by=str(_extension(resource, RECORDED_BY_URL).get("valueString") or ""),
        recorded_at=str(_extension(resource, RECORDED_AT_URL).get("valueDateTime") or ""),
        answered=str(resource.get("dateTime") or ""),
        stored_us=stored_us,
    )
