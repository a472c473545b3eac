"""What the rights handlers need from the running system, in one place (wired by ``gateway.runtime``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from audit import Target, build_event
from consent.rights.calendar import Clock, SystemClock, WorkingCalendar
from consent.rights.processors import Processors
from fhir_store import FhirStore, RequestContext, now_us

PRIVACY_PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason|PATADMIN"


def internal_context(context: RequestContext) -> RequestContext:
    """The caller's identity for store reads and writes made by the workflow (not a FHIR REST call).

    The privacy API already decided the caller may act on this request; the
    workflow then reads the patient's whole record and writes its own Task, so
    the token's patient-compartment confinement and scope grants are dropped
    and the channel says ``internal`` in the audit trail.
    """
    return replace(context, channel="internal", patient_ids=(), grants=())


@dataclass
class RightsDeps:
    store: FhirStore
    audit: Any | None = None  # audit.hooks.AuditHook (its ``writer`` appends in our transaction)
    processors: Processors | None = None  # who received patients (the CRM bridge); None: nobody
    calendar: WorkingCalendar = field(default_factory=WorkingCalendar.load)
    clock: Clock = field(default_factory=SystemClock)
    tombstone_path: Path = Path("var/erasure-tombstones.jsonl")

    def audit_in(
        self,
        conn: Connection,
        context: RequestContext,
        step: str,
        *,
        patient_id: str,
        request_id: str,
        action: str = "U",
        outcome: str = "0",
        detail: str | None = None,
        targets: Sequence[Target] = (),
    ) -> None:
        """One AuditEvent for a workflow step, in the caller's transaction (no free text from patients)."""
        if self.audit is None:
            return
        event = build_event(
            context=replace(context, purpose_of_use=PRIVACY_PURPOSE, patient_ids=()),
            event_type="rest",
            subtype=f"privacy-{step}",
            action=action,
            outcome=outcome,
            outcome_desc=f"privacy request {request_id}: {step}" + (f"; {detail}" if detail else ""),
            targets=targets,
            patient_ids=[patient_id],
            recorded_us=now_us(),
        )
        self.audit.writer.append(conn, [event])
