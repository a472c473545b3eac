"""The vocabulary of our AuditEvents: code systems, codes and the codings BALP fixes.

Why a module of its own: these are facts about FHIR, DICOM and IHE BALP
(https://profiles.ihe.net/ITI/BALP/), not about how we assemble or store an
event.  The builders (:mod:`audit.events`), the row renderer
(:mod:`audit.rows`) and the HTTP/CLI layers that record failures all name the
same codes, so they live in one place.  The coding dicts below are shared by
every event and must never be mutated (orjson only reads them).
"""

from __future__ import annotations

from typing import Final

# -- code systems ---------------------------------------------------------------
EVENT_TYPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DCM_SYSTEM: Final = "http://dicom.nema.org/resources/ontology/DCM"
INTERACTION_SYSTEM: Final = "http://hl7.org/fhir/restful-interaction"
SUBTYPE_SYSTEM: Final = "https://fhir.carebridge.vn/CodeSystem/audit-subtype"
ENTITY_TYPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/object-role"
SOURCE_TYPE_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/security-source-type"
BALP_ENTITY_TYPE_SYSTEM: Final = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
ACT_REASON_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ROLE_SYSTEM: Final = "https://fhir.carebridge.vn/CodeSystem/client-role"
CLIENT_SYSTEM: Final = "https://id.carebridge.vn/client"
HL7_MESSAGE_SYSTEM: Final = "https://id.carebridge.vn/hl7-control-id"
OBSERVER: Final = "carebridge"

# outcome codes (http://hl7.org/fhir/audit-event-outcome)
SUCCESS: Final = "0"
MINOR_FAILURE: Final = "4"  # client error (4xx other than denials)
SERIOUS_FAILURE: Final = "8"  # server error
MAJOR_FAILURE: Final = "12"  # denial / security failure

#: restful-interaction code -> AuditEvent.action (BALP: queries are E)
ACTIONS: Final = {
    "create": "C",
    "read": "R",
    "vread": "R",
    "update": "U",
    "patch": "U",
    "delete": "D",
    "search-type": "E",
    "search-system": "E",
    "search": "E",
    "history-instance": "R",
    "history-type": "R",
    "history-system": "R",
    "history": "R",
    "transaction": "E",
    "batch": "E",
    "operation": "E",
    "capabilities": "R",
}
#: event type code -> (system, display)
TYPE_DISPLAY: Final = {
    "rest": (EVENT_TYPE_SYSTEM, "RESTful Operation"),
    "110106": (DCM_SYSTEM, "Export"),
    "110107": (DCM_SYSTEM, "Import"),
    "110112": (DCM_SYSTEM, "Query"),
    "110113": (DCM_SYSTEM, "Security Alert"),
    "110114": (DCM_SYSTEM, "User Authentication"),
}
CLIENT_AGENT_TYPE: Final = {"system": DCM_SYSTEM, "code": "110153", "display": "Source Role ID"}
SERVER_AGENT_TYPE: Final = {"system": DCM_SYSTEM, "code": "110152", "display": "Destination Role ID"}
# (entity type, entity role) pairs
PATIENT_ENTITY: Final = (
    {"system": ENTITY_TYPE_SYSTEM, "code": "1", "display": "Person"},
    {"system": OBJECT_ROLE_SYSTEM, "code": "1", "display": "Patient"},
)
RESOURCE_ENTITY: Final = (
    {"system": ENTITY_TYPE_SYSTEM, "code": "2", "display": "System Object"},
    {"system": OBJECT_ROLE_SYSTEM, "code": "4", "display": "Domain Resource"},
)
QUERY_ENTITY: Final = (
    {"system": ENTITY_TYPE_SYSTEM, "code": "2", "display": "System Object"},
    {"system": OBJECT_ROLE_SYSTEM, "code": "24", "display": "Query"},
)
JOB_ENTITY: Final = (
    {"system": ENTITY_TYPE_SYSTEM, "code": "2", "display": "System Object"},
    {"system": OBJECT_ROLE_SYSTEM, "code": "20", "display": "Job"},
)
REQUEST_ENTITY_TYPE: Final = {
    "system": BALP_ENTITY_TYPE_SYSTEM,
    "code": "XrequestId",
    "display": "X-Request-Id",
}


def outcome_for_status(status: int) -> str:
    """HTTP status → AuditEvent outcome: 401/403 are denials (12), other 4xx minor (4), 5xx serious (8)."""
    if status < 400:
        return SUCCESS
    if status in (401, 403):
        return MAJOR_FAILURE
    if status < 500:
        return MINOR_FAILURE
    return SERIOUS_FAILURE
