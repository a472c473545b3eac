"""The store hook that turns committed changes into CRM events, inside the change's transaction.

Why: an event must exist iff its change committed (no lost and no phantom
events, ISO/IEC 27001:2022 A.8.16 monitoring relies on it too), and the
consent decision must read the state of that very transaction so a withdrawal
is effective for every later disclosure at once (Law 91/2025 Art. 9).  This
module decides *which* events a change means and what they may carry; how an
event is stored (sealed, in commit order) is ``crm_bridge.outbox``.

For every change of a Patient, Consent, Appointment or Encounter and every
configured CRM client, :class:`CrmOutboxHook` asks the decision point
(every answer audited), projects the allowlisted fields under the CRM's
pseudonym and appends the events to the outbox:

* Patient / Consent → ``consent.changed`` when the permitted purposes change
  (``suppress: true`` when none remain; nothing at all for a patient who never
  consented: the CRM must not even learn the patient exists) and
  ``patient.upserted`` when the projection changed and some purpose is permitted;
* a withdrawal (purposes announced before and not permitted now) also removes
  the patient's past events for that CRM that no remaining purpose covers
  (``crm_bridge.outbox.purge_withdrawn``), so re-readers of the feed no longer
  get them (Law 91/2025 Art. 9);
* Appointment status transitions → ``appointment.booked|rescheduled|cancelled|noshow|fulfilled``;
* Encounter → ``encounter.completed`` when it becomes ``finished`` (post-visit care);
* a Patient that becomes ``replaced-by`` another (HL7 ADT^A40 merge) →
  ``patient.merged`` with the old and the new pseudonym, only when the CRM was
  told about both under consent (each has purposes in ``crm_disclosure``), so
  the CRM merges its own customers and learns of no patient it was not told of.

A Patient tagged as a possible duplicate (``common.POSSIBLE_DUPLICATE_TAG``:
two registrations sharing a CCCD/BHYT, ``fhir_store.duplicates``) is held
back until resolved: no ``patient.upserted``, no grant, no appointment or
encounter event, so the CRM never builds a second customer for one person.
A withdrawal still goes out (``consent.changed`` with the purposes left):
holding it back would keep disclosing against the patient's will (Law 91/2025 Art. 9).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from sqlalchemy import Connection

from common import is_possible_duplicate
from consent import (
    APPOINTMENT_REMINDER,
    POST_VISIT_CARE,
    PURPOSES,
    ConsentRecord,
    DecisionSession,
    KeyStore,
    PolicyDecisionPoint,
    consent_patient,
    security_labels,
)
from crm_bridge.config import CrmClient, ProjectionConfig
from crm_bridge.outbox import PendingEvent, PseudonymLink, append_events, pseudonym_link, purge_withdrawn
from crm_bridge.projection import project_appointment, project_encounter, project_merge, project_patient
from fhir_store import (
    DriverQuery,
    RequestContext,
    ResourceChange,
    StoreCipher,
    load_current,
    now_us,
    replaced_by,
)

_APPOINTMENT_EVENTS = {
    "cancelled": "appointment.cancelled",
    "entered-in-error": "appointment.cancelled",
    "noshow": "appointment.noshow",
    "fulfilled": "appointment.fulfilled",
}


def _ref_id(value: Any) -> str | None:
    ref = (value or {}).get("reference") if isinstance(value, dict) else None
    if isinstance(ref, str) and ref.startswith("Patient/"):
        return ref.split("/", 1)[1]
    return None


def subject_of(resource: dict[str, Any] | None) -> str | None:
    if not resource:
        return None
    kind = resource.get("resourceType")
    if kind == "Patient":
        return str(resource.get("id") or "") or None
    if kind == "Consent":
        return consent_patient(resource)
    if kind == "Encounter":
        return _ref_id(resource.get("subject"))
    if kind == "Appointment":
        for participant in resource.get("participant") or []:
            found = _ref_id(participant.get("actor"))
            if found:
                return found
    return None


def appointment_event(previous: dict[str, Any] | None, current: dict[str, Any]) -> str | None:
    """The CRM event of an Appointment status transition (None: nothing the CRM needs)."""
    status = current.get("status")
    before = (previous or {}).get("status")
    if status == "booked":
        if before != "booked":
            return "appointment.booked"
        moved = (previous or {}).get("start") != current.get("start") or (previous or {}).get(
            "end"
        ) != current.get("end")
        return "appointment.rescheduled" if moved else None
    if status in _APPOINTMENT_EVENTS and status != before and before not in (None, "proposed"):
        return _APPOINTMENT_EVENTS[str(status)]
    if status in ("noshow", "fulfilled") and status != before:
        return _APPOINTMENT_EVENTS[str(status)]
    return None


# What each CRM was last told about a patient (driver-level: run for every Patient change).
_DISCLOSURE = DriverQuery(
    "SELECT purposes, projection_hash FROM crm_disclosure WHERE crm_id = :crm AND patient_id = :patient"
)
_DISCLOSURE_INSERT = DriverQuery(
    "INSERT INTO crm_disclosure (crm_id, patient_id, purposes, projection_hash, updated_us)"
    " VALUES (:crm, :patient, :purposes, :hash, :now)"
)
_DISCLOSURE_UPDATE = DriverQuery(
    "UPDATE crm_disclosure SET purposes = :purposes, projection_hash = :hash, updated_us = :now"
    " WHERE crm_id = :crm AND patient_id = :patient"
)


_RELEVANT = ("Patient", "Consent", "Appointment", "Encounter")


class CrmOutboxHook:
    """StoreHook (and GroupStoreHook) writing CRM events (see module docstring)."""

    def __init__(
        self,
        config: ProjectionConfig,
        keys: KeyStore,
        pdp: PolicyDecisionPoint,
        *,
        notify: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.keys = keys
        self.pdp = pdp
        self.notify = notify

    def on_changes(
        self, conn: Connection, changes: Sequence[ResourceChange], context: RequestContext
    ) -> None:
        self.on_group_changes(conn, [(changes, context)])

    def on_group_changes(
        self, conn: Connection, batches: Sequence[tuple[Sequence[ResourceChange], RequestContext]]
    ) -> None:
        """Every unit's events in one outbox statement and its decisions in one audit append.

        Each unit still decides under its own context (the audit names its request);
        what they read alike -- consents, patients loaded from the store -- is read once.
        """
        if not self.config.clients:
            return
        now = now_us()
        consents: dict[str, list[ConsentRecord]] = {}
        loaded: dict[str, dict[str, Any] | None] = {}
        sessions: list[DecisionSession] = []
        events: list[PendingEvent] = []
        links: list[PseudonymLink] = []  # recorded with the events, in one statement
        purges: list[tuple[str, str, tuple[str, ...]]] = []  # (crm, patient, purposes left) withdrawals
        for changes, context in batches:
            relevant = [c for c in changes if c.resource_type in _RELEVANT]
            if relevant:
                session = self.pdp.session(conn, context, now, consents=consents)
                sessions.append(session)
                events += self._unit(conn, session, relevant, loaded, links, purges)
        self.pdp.flush(conn, sessions)
        append_events(conn, self.keys, events, links)
        for crm_id, patient_id, remaining in purges:  # after the append: no seq is reused on SQLite
            purge_withdrawn(conn, crm_id, patient_id, remaining)
        if events and self.notify is not None:
            self.notify()

    def _unit(
        self,
        conn: Connection,
        session: DecisionSession,
        relevant: Sequence[ResourceChange],
        loaded: dict[str, dict[str, Any] | None],
        links: list[PseudonymLink],
        purges: list[tuple[str, str, tuple[str, ...]]],
    ) -> list[PendingEvent]:
        patients: dict[str, dict[str, Any] | None] = {}
        for change in relevant:
            if change.resource_type == "Patient" and change.resource is not None:
                patients[change.id] = change.resource
        events: list[PendingEvent] = []
        synced: set[tuple[str, str]] = set()
        for change in relevant:
            if change.resource is None and change.resource_type != "Consent":
                continue  # deletions: erasure reaches the CRM through emit_patient_erased
            patient_id = subject_of(change.resource) or subject_of(change.previous)
            if patient_id is None:
                continue
            if patient_id not in patients:
                if patient_id not in loaded:
                    loaded[patient_id] = _load_patient(conn, patient_id, self.pdp.cipher)
                patients[patient_id] = loaded[patient_id]
            patient = patients[patient_id]
            if patient is None:
                continue
            held = is_possible_duplicate(patient)
            for client in self.config.clients.values():
                if change.resource_type in ("Patient", "Consent"):
                    if (client.crm_id, patient_id) not in synced:
                        synced.add((client.crm_id, patient_id))
                        events += self._sync(
                            conn, session, client, patient_id, patient, links, purges, held=held
                        )
                elif not held:
                    events += self._clinical(session, client, change, patient_id, patient, links)
        for change in relevant:
            survivor = replaced_by(change.resource or {}) if change.resource_type == "Patient" else None
            if survivor is not None and survivor != replaced_by(change.previous or {}):
                events += self._merged(conn, change.id, survivor, links)
        return events

    def _merged(
        self, conn: Connection, old_id: str, new_id: str, links: list[PseudonymLink]
    ) -> list[PendingEvent]:
        """``patient.merged`` for every CRM that holds both patients under consent (after their sync)."""
        events: list[PendingEvent] = []
        for client in self.config.clients.values():
            told = [_DISCLOSURE.first(conn, {"crm": client.crm_id, "patient": p}) for p in (old_id, new_id)]
            if not all(row is not None and row[0].split() for row in told):
                continue
            old, new = (pseudonym_link(self.keys, client.crm_id, p) for p in (old_id, new_id))
            links += [old, new]
            data = project_merge(old.pseudonym, new.pseudonym)
            events.append(PendingEvent(client.crm_id, "patient.merged", new_id, new.pseudonym, data))
        return events

    def _sync(
        self,
        conn: Connection,
        session: DecisionSession,
        client: CrmClient,
        patient_id: str,
        patient: dict[str, Any],
        links: list[PseudonymLink],
        purges: list[tuple[str, str, tuple[str, ...]]],
        *,
        held: bool = False,
    ) -> list[PendingEvent]:
        """Consent and projection events of one patient for one CRM; ``held``: withdrawals only."""
        labels = security_labels(patient)
        permitted = [
            p
            for p in PURPOSES
            if session.decide(
                patient_id,
                p,
                client.crm_id,
                labels=labels,
                resource=f"Patient/{patient_id}",
                serves=client.purposes,
            ).permit
        ]
        row = _DISCLOSURE.first(conn, {"crm": client.crm_id, "patient": patient_id})
        old = row[0].split() if row is not None else []
        old_hash = row[1] if row is not None else ""
        if held:  # a possible duplicate: nothing new reaches the CRM until it is resolved
            permitted = [p for p in permitted if p in old]
        if not permitted and not old:
            return []
        links.append(pseudonym_link(self.keys, client.crm_id, patient_id))
        pseudonym = links[-1].pseudonym
        events: list[PendingEvent] = []
        if set(old) - set(permitted):  # withdrawn: past events under those purposes leave the feed
            purges.append((client.crm_id, patient_id, tuple(permitted)))
        if set(permitted) != set(old):
            events.append(
                PendingEvent(
                    client.crm_id,
                    "consent.changed",
                    patient_id,
                    pseudonym,
                    {
                        "purposes": permitted,
                        "granted": [p for p in permitted if p not in old],
                        "withdrawn": [p for p in old if p not in permitted],
                        "suppress": not permitted,
                    },
                )
            )
        new_hash = old_hash if held else ""
        if permitted and not held:
            projection = project_patient(client, patient, pseudonym)
            canonical = orjson.dumps(projection, option=orjson.OPT_SORT_KEYS)
            new_hash = self.keys.projection_digest(client.crm_id, canonical)
            # rows written before the digest was keyed hold a plain SHA-256: still "unchanged"
            unchanged = old_hash == new_hash or old_hash == hashlib.sha256(canonical).hexdigest()
            if not unchanged or not old:
                events.append(
                    PendingEvent(
                        client.crm_id,
                        "patient.upserted",
                        patient_id,
                        pseudonym,
                        {"purposes": permitted, "patient": projection},
                        PURPOSES,  # one projection serves every purpose: it leaves when none remains
                    )
                )
        values = {
            "crm": client.crm_id,
            "patient": patient_id,
            "purposes": " ".join(permitted),
            "hash": new_hash,
            "now": now_us(),
        }
        (_DISCLOSURE_INSERT if row is None else _DISCLOSURE_UPDATE).rowcount(conn, values)
        return events

    def _clinical(
        self,
        session: DecisionSession,
        client: CrmClient,
        change: ResourceChange,
        patient_id: str,
        patient: dict[str, Any],
        links: list[PseudonymLink],
    ) -> list[PendingEvent]:
        resource = change.resource or {}
        if change.resource_type == "Appointment":
            kind = appointment_event(change.previous, resource)
            purpose = POST_VISIT_CARE if kind == "appointment.fulfilled" else APPOINTMENT_REMINDER
        else:
            finished = resource.get("status") == "finished"
            was = (change.previous or {}).get("status") == "finished"
            kind = "encounter.completed" if finished and not was else None
            purpose = POST_VISIT_CARE
        if kind is None:
            return []
        labels = security_labels(resource) | security_labels(patient)
        decision = session.decide(
            patient_id,
            purpose,
            client.crm_id,
            labels=labels,
            resource=f"{change.resource_type}/{change.id}",
            serves=client.purposes,
        )
        if not decision.permit:
            return []
        links.append(pseudonym_link(self.keys, client.crm_id, patient_id))
        pseudonym = links[-1].pseudonym
        if change.resource_type == "Appointment":
            data = {
                "purpose": purpose,
                "appointment": project_appointment(client, {**resource, "id": change.id}),
            }
        else:
            data = {"purpose": purpose, "encounter": project_encounter(client, resource)}
        return [PendingEvent(client.crm_id, kind, patient_id, pseudonym, data, (purpose,))]


def _load_patient(conn: Connection, patient_id: str, cipher: StoreCipher) -> dict[str, Any] | None:
    """The current Patient, read through the store (its content is sealed at rest)."""
    stored = load_current(conn, "Patient", patient_id, cipher)
    if stored is None or stored.deleted or stored.content is None:
        return None
    return stored.resource()
