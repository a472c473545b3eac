"""The CRM bridge wiring of a runtime: consent-decision audit, HIS transport, bridge construction.

Why: every consent decision of the bridge is written to the audit trail in the
store transaction that made it (IHE BALP Export events, outcome 0 = permit,
4 = deny; Decree 356/2025/ND-CP Art. 7, Law 91/2025/QH15 Art. 9), and bookings
made from a CRM reach the HIS as SIU^S12 over MLLP.  The HTTP API the CRM calls
is :mod:`gateway.http.crm_routes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from sqlalchemy import Connection, Engine

from audit import SUBTYPE_SYSTEM, AuditHook, Target, build_event
from consent import PURPOSE_SYSTEM, Decision
from crm_bridge import CrmBridge, HisAnswer, his_error_code
from fhir_store import FhirStore, RequestContext, now_us
from gateway.mllp.client import MllpClient
from gateway.settings import Settings
from mappers import appointment_to_siu_s12

_ = SUBTYPE_SYSTEM  # the subtype below is a carebridge code in that system


class AuditDecisionRecorder:
    """``consent.pdp.DecisionAuditor`` writing one AuditEvent per decision in the caller's transaction."""

    def __init__(self, audit: AuditHook) -> None:
        self.audit = audit

    def record_decisions(
        self, conn: Connection, batches: Sequence[tuple[Sequence[Decision], RequestContext]]
    ) -> None:
        recorded = now_us()
        events = []
        for decisions, context in batches:
            for d in decisions:
                targets = []
                if d.resource and "/" in d.resource:
                    kind, _, res_id = d.resource.partition("/")
                    targets.append(Target(kind, res_id))
                if d.consent_id:
                    targets.append(Target("Consent", d.consent_id))
                events.append(
                    build_event(
                        context=replace(context, purpose_of_use=f"{PURPOSE_SYSTEM}|{d.purpose}"),
                        event_type="110106",
                        subtype="consent-decision",
                        action="E",
                        outcome="0" if d.permit else "4",
                        outcome_desc=f"{'permit' if d.permit else 'deny'}: {d.reason}; recipient={d.recipient}",
                        targets=targets,
                        patient_ids=[d.patient_id],
                        recorded_us=recorded,
                    )
                )
        self.audit.writer.append(conn, events)


def mllp_transport(endpoint: tuple[str, int], message: bytes, timeout: float) -> HisAnswer | None:
    with MllpClient(endpoint[0], endpoint[1], timeout=timeout) as client:
        ack = client.exchange(message)
    if ack is None:
        return None
    return HisAnswer(ack.code, ack.control_id, ack.text, his_error_code(ack.raw))


def build_crm_bridge(
    engine: Engine, store: FhirStore, settings: Settings, audit: AuditHook | None
) -> CrmBridge:
    """Called by ``Runtime.create``: hooks the bridge into the store."""
    _ = engine
    return CrmBridge.create(
        store.engine,
        store,
        settings.crm,
        auditor=AuditDecisionRecorder(audit) if audit is not None else None,
        transport=mllp_transport,
        build_siu=appointment_to_siu_s12,
        own_ports=(settings.http.port, settings.mllp.port),  # never webhook targets
    )


__all__ = ["AuditDecisionRecorder", "build_crm_bridge", "mllp_transport"]
