"""What the privacy officer's queue needs beyond the rights workflow: finding the patient, the queue.

Why here and not in the routes: the rules (a record number is an identifier of
the hospital record-number system, whatever the issuing facility; which clock
state a request is in) are the same for every page that shows them.

- A patient is found by record number through the store's ordinary search
  (``Patient?identifier=<number>``, blinded like every identifier search); only
  identifiers of the record-number system (``common.mrn_system``, HL7 PID-3 type
  MR) count, so a CCCD or insurance number typed by mistake finds nobody.  The
  console role table (not FHIR scopes: the privacy officer has no FHIR Patient
  scope) allows the lookup, and the page records it with ``Console.audit_view``
  naming the person and the patients found.
- Staff filing on a patient's behalf records how the identity was verified, as
  over the privacy API (``gateway.http.privacy_routes``).
- The queue's clock state is the workflow's own (``PrivacyRequest.clock_state``:
  Decree 356/2025/ND-CP Art. 5 deadlines), never recomputed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common import InvalidInput, mrn_system
from consent import PrivacyRequest, RightsService
from fhir_store import FhirStore, RequestContext, parse_query

#: ``https://id.carebridge.vn/mrn/`` — every facility's record-number system starts with it.
MRN_PREFIX = mrn_system("x")[:-1]
CLOCK_STATES = ("on-time", "near-due", "overdue", "done")
MAX_MATCHES = 20
MIN_VERIFICATION_CHARS = 5


@dataclass(frozen=True)
class PatientMatch:
    id: str
    record_numbers: tuple[str, ...]
    name: str
    birth_date: str


@dataclass(frozen=True)
class QueueRow:
    request: PrivacyRequest
    state: str  # on-time | near-due | overdue | done
    deadline: str  # acknowledgement | completion
    deadline_us: int


def _name(patient: dict[str, Any]) -> str:
    for name in patient.get("name") or []:
        text = name.get("text") or " ".join([name.get("family") or "", *(name.get("given") or [])]).strip()
        if text:
            return str(text)
    return ""


def find_by_record_number(store: FhirStore, number: str) -> list[PatientMatch]:
    """Active patients holding ``number`` as a hospital record number (any facility); the caller audits."""
    number = number.strip()
    if not number:
        return []
    query = parse_query("Patient", [("identifier", number), ("_count", str(MAX_MATCHES))])
    page = store.search(query)
    found = []
    for stored in page.matches:
        patient = stored.resource()
        numbers = tuple(
            str(i.get("value"))
            for i in patient.get("identifier") or []
            if str(i.get("system") or "").startswith(MRN_PREFIX) and i.get("value") == number
        )
        if numbers and patient.get("active", True) is not False:
            found.append(
                PatientMatch(stored.id, numbers, _name(patient), str(patient.get("birthDate") or ""))
            )
    return found


def file_for_patient(
    service: RightsService,
    context: RequestContext,
    *,
    patient_id: str,
    request_type: str,
    reason: str,
    verification: str,
) -> PrivacyRequest:
    """File a request on the patient's behalf (the workflow checks type, reason, duplicates)."""
    if len(verification.strip()) < MIN_VERIFICATION_CHARS:
        raise InvalidInput(
            "staff filing on a patient's behalf must record how the identity was verified",
            location="identity_verification",
        )
    return service.file(
        context,
        patient_id=patient_id,
        request_type=request_type,
        scope={},
        reason=reason,
        verification=verification.strip(),
    )


def queue(
    service: RightsService, *, state: str | None = None, request_type: str | None = None
) -> list[QueueRow]:
    """Every request with its clock state, the most urgent first (open before done, then deadline)."""
    now = service.now()
    rows = []
    for req in service.find():
        if request_type and req.type != request_type:
            continue
        current, which, deadline = req.clock_state(service.calendar, now)
        if state and current != state:
            continue
        rows.append(QueueRow(req, current, which, deadline))
    order = {"overdue": 0, "near-due": 1, "on-time": 2, "done": 3}
    rows.sort(key=lambda r: (order[r.state], r.deadline_us if r.state != "done" else -r.request.updated_us))
    return rows
