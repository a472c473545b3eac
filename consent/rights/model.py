"""Request types, statuses, deadlines, and the FHIR ``Task`` view of a request.

Legal basis of the deadlines (Decree 356/2025/ND-CP Art. 5): the one table
of clocks, each with its citation, is :data:`consent.rights.deadlines.CLOCKS`
(acknowledge in 2 working days; withdrawal, restriction and objection in 15
days, 20 when a processor must act, one extension of at most 15; access and
rectification in 10 days; erasure in 20 days, 30 when a processor must act,
one extension of at most 20).  The names below are read from that table.

Each request is also a FHIR R4 ``Task`` (https://hl7.org/fhir/R4/task.html)
so staff see it over ``/fhir/Task``: ``status``/``businessStatus`` follow the
workflow, ``for`` is the patient, ``authoredOn`` the filing time and
``restriction.period.end`` the current deadline.  The Task never carries the
reason or the verification note (free text may hold personal data).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import orjson

from consent.rights import deadlines as d
from consent.rights.calendar import WorkingCalendar, iso
from consent.rights.schema import SEALED
from fhir_store import ResourceSearchSpec, SearchParam, StoreCipher

ERASURE: Final = d.ERASURE
ACCESS: Final = d.ACCESS
RECTIFICATION: Final = d.RECTIFICATION
RESTRICTION: Final = d.RESTRICTION
OBJECTION: Final = d.OBJECTION
WITHDRAWAL: Final = d.WITHDRAWAL
REQUEST_TYPES: tuple[str, ...] = d.REQUEST_TYPES

ACK_WORKING_DAYS: Final = d.ack_working_days()
DUE_DAYS: dict[str, int] = {t: d.completion_days(t, processor=False) for t in REQUEST_TYPES}
ERASURE_WITH_PROCESSOR_DAYS: Final = d.completion_days(ERASURE, processor=True)
#: The longest extension of any type (the per-type limit is ``deadlines.max_extension``).
MAX_EXTENSION_DAYS: Final = max(d.max_extension(t) for t in REQUEST_TYPES)
#: Shortest reason accepted for filing, extending or closing (a reason is required, not a word).
MIN_REASON_CHARS: Final = 5
NEAR_DUE_WORKING_DAYS: Final = 2

RECEIVED: Final = "received"
ACKNOWLEDGED: Final = "acknowledged"
IN_PROGRESS: Final = "in-progress"  # e.g. erasure waiting for the processors' receipts
COMPLETED: Final = "completed"
CLOSED: Final = "closed"
REJECTED: Final = "rejected"
OPEN_STATUSES = frozenset({RECEIVED, ACKNOWLEDGED, IN_PROGRESS})

TASK_STATUS = {
    RECEIVED: "requested",
    ACKNOWLEDGED: "accepted",
    IN_PROGRESS: "in-progress",
    COMPLETED: "completed",
    CLOSED: "completed",
    REJECTED: "rejected",
}
REQUEST_TYPE_SYSTEM: Final = "https://fhir.carebridge.vn/CodeSystem/privacy-request-type"
BUSINESS_STATUS_SYSTEM: Final = "https://fhir.carebridge.vn/CodeSystem/privacy-request-status"
REQUEST_ID_SYSTEM: Final = "https://id.carebridge.vn/privacy-request"
LEGAL_BASIS: Final = "Decree 356/2025/ND-CP Art. 5; Law 91/2025/QH15 Art. 14"


def due_us(calendar: WorkingCalendar, request_type: str, created_us: int, processor: bool) -> int:
    return calendar.calendar_days_due(created_us, d.completion_days(request_type, processor))


@dataclass(frozen=True)
class PrivacyRequest:
    id: str
    patient_id: str
    type: str
    status: str
    scope: dict[str, Any]
    reason: str
    filed_by: str
    filed_role: str
    verification: str | None
    processor_involved: bool
    created_us: int
    ack_due_us: int
    due_us: int
    acknowledged_us: int | None
    extended_us: int | None
    extension_days: int | None
    extension_reason: str | None
    completed_us: int | None
    closed_us: int | None
    close_reason: str | None
    task_id: str | None
    response: dict[str, Any] | None
    updated_us: int

    @classmethod
    def from_row(cls, row: Any, cipher: StoreCipher) -> PrivacyRequest:
        """The request of a ``privacy_request`` row, its sealed columns opened (legacy plaintext as is)."""
        m = dict(row._mapping)
        for column, handle in SEALED["privacy_request"].items():
            m[column] = handle.open(cipher, (m["id"],), m[column])
        return cls(
            **{
                k: m[k]
                for k in cls.__dataclass_fields__
                if k not in ("scope", "response", "processor_involved")
            },
            scope=orjson.loads(m["scope"]),
            response=orjson.loads(m["response"]) if m["response"] else None,
            processor_involved=bool(m["processor_involved"]),
        )

    def sealed_values(self, cipher: StoreCipher, **columns: str | None) -> dict[str, str | None]:
        """``columns`` (clear text of sealed ``privacy_request`` columns) sealed for this row."""
        handles = SEALED["privacy_request"]
        return {c: handles[c].seal(cipher, (self.id,), text) for c, text in columns.items()}

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    def clock_state(self, calendar: WorkingCalendar, now: int) -> tuple[str, str, int]:
        """(state, which deadline, its instant): state is on-time | near-due | overdue | done."""
        if not self.is_open:
            return "done", "completion", self.due_us
        which, deadline = (
            ("acknowledgement", self.ack_due_us)
            if self.acknowledged_us is None
            else ("completion", self.due_us)
        )
        if which == "acknowledgement" and self.due_us < deadline:
            which, deadline = "completion", self.due_us
        if now > deadline:
            return "overdue", which, deadline
        if calendar.working_days_between(now, deadline) <= NEAR_DUE_WORKING_DAYS and which == "completion":
            return "near-due", which, deadline
        if which == "acknowledgement" and calendar.working_days_between(now, deadline) < 1:
            return "near-due", which, deadline
        return "on-time", which, deadline

    def clocks(self, calendar: WorkingCalendar, now: int) -> dict[str, Any]:
        state, which, deadline = self.clock_state(calendar, now)
        return {
            "state": state,
            "next_deadline": which,
            "next_deadline_at": iso(deadline),
            "acknowledge_by": iso(self.ack_due_us),
            "acknowledged_at": iso(self.acknowledged_us),
            "complete_by": iso(self.due_us),
            "completed_at": iso(self.completed_us),
            "extended": self.extended_us is not None,
            "extension_days": self.extension_days,
            "processor_involved": self.processor_involved,
            "working_days_left": calendar.working_days_between(now, deadline) if self.is_open else None,
        }

    def to_json(self, calendar: WorkingCalendar, now: int, *, staff: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "status": self.status,
            "patient": f"Patient/{self.patient_id}",
            "scope": self.scope,
            "reason": self.reason,
            "filed_at": iso(self.created_us),
            "filed_by_role": self.filed_role,
            "clocks": self.clocks(calendar, now),
            "task": f"Task/{self.task_id}" if self.task_id else None,
            "extension_reason": self.extension_reason,
            "close_reason": self.close_reason,
            "response_document": f"/privacy/v1/requests/{self.id}/response" if self.response else None,
        }
        if staff:
            body["filed_by"] = self.filed_by
            body["identity_verification"] = self.verification
        return body


def task_resource(req: PrivacyRequest, business_status: str | None = None) -> dict[str, Any]:
    """The FHIR Task mirroring ``req`` (no free text from the patient)."""
    deadline = req.ack_due_us if req.acknowledged_us is None and req.is_open else req.due_us
    task: dict[str, Any] = {
        "resourceType": "Task",
        "identifier": [{"system": REQUEST_ID_SYSTEM, "value": req.id}],
        "status": TASK_STATUS[req.status],
        "businessStatus": {
            "coding": [{"system": BUSINESS_STATUS_SYSTEM, "code": business_status or req.status}],
            "text": business_status or req.status,
        },
        "intent": "order",
        "priority": "urgent" if req.type == ERASURE else "routine",
        "code": {"coding": [{"system": REQUEST_TYPE_SYSTEM, "code": req.type}]},
        "description": f"Data-subject {req.type} request ({LEGAL_BASIS})",
        "for": {"reference": f"Patient/{req.patient_id}"},
        "authoredOn": iso(req.created_us),
        "lastModified": iso(req.updated_us),
        "restriction": {"period": {"start": iso(req.created_us), "end": iso(deadline)}},
    }
    return task


#: ``/fhir/Task``: validation and search parameters (registered by ``consent.registration``).
TASK_SEARCH = ResourceSearchSpec(
    "Task",
    {
        p.name: p
        for p in (
            SearchParam("patient", "reference", ("for",), targets=("Patient",)),
            SearchParam("subject", "reference", ("for",), targets=("Patient",)),
            SearchParam("status", "token", ("status",)),
            SearchParam("business-status", "token", ("businessStatus",)),
            SearchParam("code", "token", ("code",)),
            SearchParam("identifier", "token", ("identifier",)),
            SearchParam("authored-on", "date", ("authoredOn",)),
            SearchParam("period", "date", ("restriction.period",)),
        )
    },
    {"authored-on": "authored-on"},
)
