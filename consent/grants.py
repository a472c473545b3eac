"""Who may grant consent, and when a grant may be dated: the rules of a provable consent.

Why (Law 91/2025/QH15 Art. 9: consent must be explicit and provable; Art. 28
marketing): a grant (``provision.type`` ``permit``) is evidence of what the
patient agreed to, so

* it comes from the clinic (front desk through the HIS's ``/fhir/Consent``,
  a privacy officer or the patient's own form through ``/privacy/v1/consents``),
  never from a CRM: a CRM records withdrawals and opt-outs only (a recipient
  must not be able to authorise itself);
* it is dated when the patient answered, and that date must be plausible: a
  date in the future, or more than :data:`MAX_GRANT_AGE_US` (24 h) before it is
  recorded, is refused unless a privacy officer records the reason
  (:data:`LATE_REASON_URL`, at least 10 characters: a paper form entered late);
* who recorded it and when are stamped by the clinic endpoint
  (:data:`RECORDED_BY_URL`, :data:`RECORDED_AT_URL`) and always in the
  AuditEvent of the write (agent, recorded time).

Withdrawals and opt-outs (``deny``) are always accepted, from anyone allowed to
write Consents, dated whenever.  The rules run in the store's consent intake
stage (:class:`consent.purposes.ConsentIntakeHook`), so every write path obeys them.
"""

from __future__ import annotations

from typing import Any

from common import Forbidden, InvalidInput
from fhir_store import RequestContext, parse_fhir_instant_range

RECORDED_BY_URL = "https://fhir.carebridge.vn/StructureDefinition/consent-recorded-by"
RECORDED_AT_URL = "https://fhir.carebridge.vn/StructureDefinition/consent-recorded-at"
LATE_REASON_URL = "https://fhir.carebridge.vn/StructureDefinition/consent-late-entry-reason"
MAX_GRANT_AGE_US = 24 * 3600 * 1_000_000
#: clocks of the clinic's systems drift: a grant up to this far "in the future" is accepted
CLOCK_SKEW_US = 5 * 60 * 1_000_000
#: roles that may date a grant outside the window, with a reason
LATE_ENTRY_ROLES = frozenset({"privacy_officer"})


def _extension(resource: dict[str, Any], url: str) -> dict[str, Any] | None:
    for ext in resource.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == url:
            return ext
    return None


def late_entry_reason(resource: dict[str, Any]) -> str:
    ext = _extension(resource, LATE_REASON_URL) or {}
    return str(ext.get("valueString") or "").strip()


def _is_new_grant(resource: dict[str, Any], previous: dict[str, Any] | None) -> bool:
    if (resource.get("provision") or {}).get("type") != "permit":
        return False
    if previous is None or (previous.get("provision") or {}).get("type") != "permit":
        return True
    return previous.get("dateTime") != resource.get("dateTime")


def check_grant(
    resource: dict[str, Any], previous: dict[str, Any] | None, context: RequestContext, now_us: int
) -> None:
    """Refuse a grant a CRM makes, or one dated outside the window without a privacy officer's reason.

    Only a new grant (or a grant whose date changes) is checked: withdrawing it
    later (``status`` ``inactive``) must never be refused.
    """
    if not _is_new_grant(resource, previous):
        return
    if context.role == "crm" or context.channel == "crm":
        raise Forbidden(
            "a CRM may record withdrawals and opt-outs only; grants are recorded by the clinic",
            location="Consent.provision.type",
        )
    try:
        start, end = parse_fhir_instant_range(str(resource.get("dateTime") or ""))
    except InvalidInput:
        return  # the profile check names the malformed dateTime
    future = start > now_us + CLOCK_SKEW_US
    stale = end < now_us - MAX_GRANT_AGE_US
    if not (future or stale):
        return
    if context.role in LATE_ENTRY_ROLES and len(late_entry_reason(resource)) >= 10:
        return
    what = "in the future" if future else "more than 24 h before it is recorded"
    raise InvalidInput(
        f"a consent grant dated {what} is refused"
        + ("" if future else "; a privacy officer may record it with a late-entry reason"),
        location="Consent.dateTime",
    )
