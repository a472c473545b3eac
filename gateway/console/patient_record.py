"""What the compliance officer reads about one patient: matches, consents, disclosures, accesses (issue #19).

Why: Circular 13/2025/TT-BYT and Law 91/2025/QH15 ask that a hospital can say
who accessed a record, what was disclosed to which processor and under which
consent; before this page that meant curl, internal UUIDs and UTC codes.
Everything is read through the packages' public functions: the FHIR store's
search (identifier values are compared as keyed hashes: ``fhir_store`` blinds
them, so a record number or CCCD is never compared in clear), Consent history,
``crm_bridge.patient_disclosures`` and ``audit.patient_accesses``.  Nothing
here records the view: the route audits it, naming the person
(``Console.audit_view``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from audit import AccessEntry, chain_length, patient_accesses
from common import BASE, CCCD_SYSTEM
from consent import ConsentStep, consent_step
from crm_bridge import patient_disclosures
from fhir_store import FhirStore, for_reading, parse_query
from gateway.runtime import Runtime

MRN_PREFIX = f"{BASE}/mrn/"
MAX_MATCHES = 20
MAX_ACCESSES = 1000
MAX_CONSENTS = 100


@dataclass(frozen=True)
class PatientMatch:
    id: str
    name: str
    birth_year: str
    record_numbers: tuple[str, ...]
    active: bool


@dataclass(frozen=True)
class Disclosure:
    crm: str
    event_type: str
    purposes: tuple[str, ...]
    created_us: int


@dataclass
class PatientRecord:
    patient: PatientMatch
    consents: list[ConsentStep] = field(default_factory=list)
    disclosures: list[Disclosure] = field(default_factory=list)
    accesses: list[AccessEntry] = field(default_factory=list)
    accesses_total: int = 0


def _name(resource: dict[str, Any]) -> str:
    for name in resource.get("name") or ():
        if name.get("text"):
            return str(name["text"])
        parts = [name.get("family") or "", *(name.get("given") or ())]
        if any(parts):
            return " ".join(p for p in parts if p)
    return ""


def match_of(res_id: str, resource: dict[str, Any]) -> PatientMatch:
    numbers = tuple(
        str(i.get("value"))
        for i in resource.get("identifier") or ()
        if str(i.get("system") or "").startswith(MRN_PREFIX) and i.get("value")
    )
    return PatientMatch(
        id=res_id,
        name=_name(resource),
        birth_year=str(resource.get("birthDate") or "")[:4],
        record_numbers=numbers,
        active=resource.get("active", True) is not False,
    )


def _looks_like_identifier(text: str) -> bool:
    return any(ch.isdigit() for ch in text) and " " not in text


def find_patients(store: FhirStore, q: str) -> list[PatientMatch]:
    """Patients whose record number, CCCD (or any identifier) equals ``q``, else whose names start with its words.

    An identifier search carries no system, so a record number of any facility
    matches; a 12-digit number is also searched as a CCCD explicitly (the store
    blinds both values before the lookup).  No caller context is given to the
    store: the route records one view event naming the person and the ids shown.
    """
    q = q.strip()
    if not q:
        return []
    found: dict[str, PatientMatch] = {}
    searches: list[list[tuple[str, str]]] = []
    if _looks_like_identifier(q):
        searches.append([("identifier", q)])
        if q.isdigit() and len(q) == 12:
            searches.append([("identifier", f"{CCCD_SYSTEM}|{q}")])
    else:  # every word must start a part of a name (FHIR string search: AND of repeated parameters)
        searches.append([("name", word) for word in q.split()[:5]])
    for params in searches:
        query = parse_query("Patient", [*params, ("_count", str(MAX_MATCHES))], store.limits)
        for stored in store.search(query).matches:
            found.setdefault(stored.id, match_of(stored.id, stored.resource()))
    return list(found.values())[:MAX_MATCHES]


def _consents(store: FhirStore, patient_id: str) -> list[ConsentStep]:
    query = parse_query("Consent", [("patient", patient_id), ("_count", str(MAX_CONSENTS))], store.limits)
    steps: list[ConsentStep] = []
    for consent in store.search(query).matches:
        versions, _ = store.history("Consent", consent.id, count=100)
        for stored, _method, _seq in versions:
            resource = None if stored.deleted else stored.resource()
            steps.append(consent_step(stored.id, stored.version_id, stored.last_updated_us, resource))
    steps.sort(key=lambda s: (s.stored_us, s.consent_id, s.version), reverse=True)
    return steps


def read_record(runtime: Runtime, patient_id: str) -> PatientRecord | None:
    """The patient's page, or None when there is no such patient.

    Accesses stop at the events that existed before this review, so the
    review's own AuditEvent (written next) is not what it shows.
    """
    store = runtime.store
    query = parse_query("Patient", [("_id", patient_id)], store.limits)
    matches = store.search(query).matches
    if not matches:
        return None
    record = PatientRecord(match_of(patient_id, matches[0].resource()))
    record.consents = _consents(store, patient_id)
    with for_reading(runtime.engine).connect() as conn:
        record.disclosures = [
            Disclosure(crm, event_type, tuple(purposes.split()), created_us)
            for crm, event_type, purposes, created_us in patient_disclosures(conn, patient_id)
        ]
        head = chain_length(conn)
        record.accesses, record.accesses_total = patient_accesses(
            conn, patient_id, limit=MAX_ACCESSES, max_seq=head
        )
    return record
