"""The policy decision point: (patient, purpose, recipient, resource, labels) → permit | deny.

Why (Law 91/2025/QH15 Art. 9, 26, 28; Decree 356/2025/ND-CP Art. 7; ISO/IEC
27001:2022 A.5.15 deny by default):

* **default deny** — no applicable Consent means no disclosure to a CRM;
* **restricted labels win** — a resource (or its Patient) labelled R, V, PSY or
  HIV in ``meta.security``, or under legal hold (``consent.retention.is_held``,
  Circular 33/2025/TT-BYT: read as ``R`` by ``security_labels``), is never
  disclosed, whatever was consented;
* **withdrawal at once** — consents are read on the connection of the
  transaction that would disclose, so a withdrawal committed before it is
  seen, and one in the same transaction too;
* **a consent binds its recipient** — a grant (``permit``) counts for a CRM
  only when it names that CRM as recipient actor, or names none and the CRM
  declares it serves the purpose (``serves``: the ``purposes`` of its entry in
  the projection file); a grant without recipient never reaches a CRM serving
  other purposes (the marketing CRM does not get care consents).  A
  withdrawal or opt-out (``deny``) without recipient applies to every CRM:
  withdrawing must never be narrower than what was granted (Law 91/2025 Art. 9);
* **latest answer wins** for care purposes (a newer ``deny`` withdraws an
  older ``permit`` and vice versa); for **marketing any active opt-out wins**
  (opt-out must always be possible and must not be overridden silently).

Every decision is handed to a :class:`DecisionAuditor` (the gateway wires the
audit trail), permit and deny alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from sqlalchemy import Connection

from common import InvalidInput
from consent.purposes import (
    MARKETING,
    RESTRICTED_LABELS,
    consent_purposes,
    consent_recipients,
    security_labels,
)
from fhir_store import RequestContext, StoreCipher, current_consents_of_patient, parse_fhir_instant_range


@dataclass(frozen=True)
class Decision:
    """One answer of the decision point (no patient data beyond the internal id)."""

    permit: bool
    patient_id: str
    purpose: str
    recipient: str
    reason: str  # "consent" | "no-consent" | "withdrawn" | "opt-out" | "restricted-label" | ...
    consent_id: str | None = None
    resource: str | None = None  # "Encounter/12" the decision was about


class DecisionAuditor(Protocol):
    """Records decisions in the audit trail inside the caller's transaction.

    ``batches`` holds each request's decisions with its context, in order: a group
    commit's requests are recorded in one append.
    """

    def record_decisions(
        self, conn: Connection, batches: Sequence[tuple[Sequence[Decision], RequestContext]]
    ) -> None: ...


@dataclass(frozen=True)
class ConsentRecord:
    id: str
    status: str
    permit: bool
    purposes: tuple[str, ...]
    recipients: tuple[str, ...]
    answered_us: int
    period: tuple[int, int] | None
    updated_us: int


def _range(text: object) -> tuple[int, int] | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return parse_fhir_instant_range(text)
    except InvalidInput:
        return None


def _record(res_id: str, updated_us: int, resource: dict[str, Any]) -> ConsentRecord:
    answered = _range(resource.get("dateTime"))
    provision = resource.get("provision") or {}
    period = provision.get("period") or None
    span: tuple[int, int] | None = None
    if isinstance(period, dict):
        start, end = _range(period.get("start")), _range(period.get("end"))
        span = (start[0] if start else -(2**62), end[1] if end else 2**62)
    return ConsentRecord(
        id=res_id,
        status=str(resource.get("status") or ""),
        permit=provision.get("type") == "permit",
        purposes=tuple(consent_purposes(resource)),
        recipients=tuple(consent_recipients(resource)),
        answered_us=answered[0] if answered else 0,
        period=span,
        updated_us=updated_us,
    )


def load_consents(conn: Connection, patient_id: str, cipher: StoreCipher) -> list[ConsentRecord]:
    """The patient's current Consents, read on ``conn`` (sees this transaction's writes).

    Content is sealed at rest: ``cipher`` (the store's) opens it.
    """
    rows = current_consents_of_patient(conn, patient_id)
    return [
        _record(
            str(r[0]), int(r[1]), orjson.loads(cipher.open_resource("Consent", str(r[0]), r[2], bytes(r[3])))
        )
        for r in rows
        if r[3] is not None
    ]


def decide(
    consents: Iterable[ConsentRecord],
    *,
    patient_id: str,
    purpose: str,
    recipient: str,
    at_us: int,
    labels: Iterable[str] = (),
    resource: str | None = None,
    serves: Iterable[str] = (),
) -> Decision:
    """Pure decision over already loaded consents (see module docstring for the rules).

    ``serves``: the purposes the recipient declares it serves; a grant naming no
    recipient counts only for those.
    """
    if RESTRICTED_LABELS.intersection(labels):
        return Decision(False, patient_id, purpose, recipient, "restricted-label", resource=resource)
    served = purpose in frozenset(serves)
    applicable = [
        c
        for c in consents
        if c.status == "active"
        and purpose in c.purposes
        and (recipient in c.recipients or (not c.recipients and (served or not c.permit)))
        and (c.period is None or c.period[0] <= at_us <= c.period[1])
    ]
    if not applicable:
        return Decision(False, patient_id, purpose, recipient, "no-consent", resource=resource)
    if purpose == MARKETING:
        opt_out = [c for c in applicable if not c.permit]
        if opt_out:
            return Decision(False, patient_id, purpose, recipient, "opt-out", opt_out[0].id, resource)
    latest = max(applicable, key=lambda c: (c.answered_us, c.updated_us))
    if latest.permit:
        return Decision(True, patient_id, purpose, recipient, "consent", latest.id, resource)
    return Decision(False, patient_id, purpose, recipient, "withdrawn", latest.id, resource)


class PolicyDecisionPoint:
    """Loads consents per patient (cached for one transaction) and audits every decision."""

    def __init__(self, auditor: DecisionAuditor | None = None, *, cipher: StoreCipher) -> None:
        self.auditor = auditor
        self.cipher = cipher  # the store's: consents are read straight from its tables

    def session(
        self,
        conn: Connection,
        context: RequestContext,
        at_us: int,
        *,
        consents: dict[str, list[ConsentRecord]] | None = None,
    ) -> DecisionSession:
        """Decisions for one request; ``consents`` shares what was loaded with other sessions
        of the same transaction (a group commit), which all see the same consents."""
        return DecisionSession(self, conn, context, at_us, {} if consents is None else consents)

    def flush(self, conn: Connection, sessions: Sequence[DecisionSession]) -> None:
        """Audit the sessions' decisions in one append, in session order."""
        batches = [(session.decisions, session.context) for session in sessions if session.decisions]
        if batches and self.auditor is not None:
            self.auditor.record_decisions(conn, batches)
        for session in sessions:
            session.decisions = []


class DecisionSession:
    """Decisions made inside one transaction; :meth:`flush` audits them in one append."""

    def __init__(
        self,
        pdp: PolicyDecisionPoint,
        conn: Connection,
        context: RequestContext,
        at_us: int,
        consents: dict[str, list[ConsentRecord]],
    ) -> None:
        self.pdp = pdp
        self.conn = conn
        self.context = context
        self.at_us = at_us
        self.decisions: list[Decision] = []
        self._consents = consents

    def consents(self, patient_id: str) -> list[ConsentRecord]:
        if patient_id not in self._consents:
            self._consents[patient_id] = load_consents(self.conn, patient_id, self.pdp.cipher)
        return self._consents[patient_id]

    def decide(
        self,
        patient_id: str,
        purpose: str,
        recipient: str,
        *,
        labels: Iterable[str] = (),
        resource: str | None = None,
        serves: Iterable[str] = (),
    ) -> Decision:
        decision = decide(
            self.consents(patient_id),
            patient_id=patient_id,
            purpose=purpose,
            recipient=recipient,
            at_us=self.at_us,
            labels=labels,
            resource=resource,
            serves=serves,
        )
        self.decisions.append(decision)
        return decision

    def flush(self) -> None:
        self.pdp.flush(self.conn, [self])


__all__ = [
    "ConsentRecord",
    "Decision",
    "DecisionAuditor",
    "DecisionSession",
    "PolicyDecisionPoint",
    "decide",
    "load_consents",
    "security_labels",
]
