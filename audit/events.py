"""FHIR R4 AuditEvent builders following the IHE Basic Audit Log Patterns (BALP).

Why: ISO/IEC 27001:2022 A.8.15 (logging) and Circular 46/2018/TT-BYT Art. 8
(traceability of every access) require one record per access, change and
disclosure saying who (agent: client id, role, network address), what (entity:
resource and version, the patient), when, why (purposeOfEvent), through which
interaction and with which outcome.  BALP (https://profiles.ihe.net/ITI/BALP/)
fixes how those facts sit in an AuditEvent so other tools can read our log:

* REST interactions: ``type`` = audit-event-type ``rest``, ``subtype`` = the
  restful-interaction code, ``action`` C/R/U/D/E (E for queries, as BALP Query);
* HL7 v2 message import: ``type`` = DICOM 110107 Import; exports: 110106 Export;
* agent[0] the requesting client (DICOM 110153 Source Role ID, ``requestor``
  true), agent[1] this server (110152 Destination Role ID);
* entity: the resource (audit-entity-type 2, object-role 4 Domain Resource),
  the patient (type 1 Person, role 1 Patient), the query (role 24), and the
  request id as a BALP ``XrequestId`` transaction entity.

Builders return plain dicts (fast: no model validation on the hot path); the
tests validate them with ``fhir.resources`` R4B.  No patient data other than
references (ids) goes into an event: the query text is stored, but search
parameters are ids/identifiers already visible to the auditor.
"""

from __future__ import annotations

import base64
import ipaddress
import itertools
import os
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from audit.codes import (
    ACT_REASON_SYSTEM,
    ACTIONS,
    CLIENT_AGENT_TYPE,
    CLIENT_SYSTEM,
    DCM_SYSTEM,
    HL7_MESSAGE_SYSTEM,
    INTERACTION_SYSTEM,
    JOB_ENTITY,
    OBSERVER,
    PATIENT_ENTITY,
    QUERY_ENTITY,
    REQUEST_ENTITY_TYPE,
    RESOURCE_ENTITY,
    ROLE_SYSTEM,
    SERVER_AGENT_TYPE,
    SOURCE_TYPE_SYSTEM,
    SUCCESS,
    TYPE_DISPLAY,
)
from audit.codes import SUBTYPE_SYSTEM as SUBTYPE_SYSTEM  # re-exported: callers name their subtypes
from audit.codes import outcome_for_status as outcome_for_status  # re-exported for the HTTP layer
from fhir_store import RequestContext, from_us


@dataclass(frozen=True)
class Target:
    """A resource an event is about: ``Patient/1`` (version optional)."""

    resource_type: str
    id: str
    version_id: int | None = None

    @property
    def reference(self) -> str:
        return versioned_reference(self.resource_type, self.id, self.version_id)


def versioned_reference(resource_type: str, resource_id: str, version_id: int | None) -> str:
    base = f"{resource_type}/{resource_id}"
    return base if version_id is None else f"{base}/_history/{version_id}"


def _id_prefix() -> str:
    """The first 24 characters of this process's event ids (74 random bits, UUID v4 marks)."""
    return str(uuid.UUID(int=int.from_bytes(os.urandom(10), "big") << 48, version=4))[:24]


_ID_PREFIX = _id_prefix()
_ID_COUNTER = itertools.count()


def _reseed_ids() -> None:
    """A forked worker must not repeat its parent's ids."""
    global _ID_PREFIX, _ID_COUNTER
    _ID_PREFIX = _id_prefix()
    _ID_COUNTER = itertools.count()


os.register_at_fork(after_in_child=_reseed_ids)


def new_event_id() -> str:
    """A UUID v4-format id: 74 random bits per process + a 48-bit counter.

    ``uuid.uuid4()`` reads ``os.urandom`` per call, a large part of building
    an event, and building a ``UUID`` object per event is not free either
    (docs/benchmarks.md, "Design figures"), so the random part (whose version and
    variant bits all sit in the first 24 characters) is formatted once and
    the counter fills the last 12 hex digits.  Ids need to be unique (a
    database constraint enforces it), not unpredictable: tamper evidence comes
    from the hash chain and its HMAC, not from the id.
    """
    return f"{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFF_FFFF_FFFF:012x}"


_SECOND_CACHE: tuple[int, str] = (-1, "")


def format_recorded(recorded_us: int) -> str:
    """FHIR instant with microseconds (the chain orders events; precision helps the auditor).

    The ``YYYY-MM-DDTHH:MM:SS`` prefix is cached per second: strftime is a
    sizeable part of an event's build time, and events arrive many per second.
    """
    global _SECOND_CACHE
    second, micros = divmod(recorded_us, 1_000_000)
    cached_second, prefix = _SECOND_CACHE
    if cached_second != second:
        prefix = from_us(second * 1_000_000).strftime("%Y-%m-%dT%H:%M:%S")
        _SECOND_CACHE = (second, prefix)
    return f"{prefix}.{micros:06d}Z"


def coding(system: str, code: str, display: str | None = None) -> dict[str, str]:
    out = {"system": system, "code": code}
    if display:
        out["display"] = display
    return out


@lru_cache(maxsize=256)
def _purpose(purpose_of_use: str | None) -> list[dict[str, Any]] | None:
    """``TREAT`` (v3-ActReason) or ``system|code`` (cached: shared, never mutated)."""
    if not purpose_of_use:
        return None
    system, sep, code = purpose_of_use.rpartition("|")
    return [{"coding": [{"system": system if sep else ACT_REASON_SYSTEM, "code": code}]}]


def _network(address: str | None) -> dict[str, str] | None:
    """BALP network type: 2 = IP address, 1 = machine name."""
    if not address:
        return None
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 else address
    try:
        ipaddress.ip_address(host.strip("[]"))
        kind = "2"
    except ValueError:
        kind = "1"
    return {"address": address, "type": kind}


@lru_cache(maxsize=1024)
def _agents(
    client_id: str, role: str, source_address: str | None, purpose_of_use: str | None
) -> list[dict[str, Any]]:
    """Agents of a caller (cached per caller, not per request: never mutated)."""
    client: dict[str, Any] = {
        "type": {"coding": [CLIENT_AGENT_TYPE]},
        "who": {"identifier": {"system": CLIENT_SYSTEM, "value": client_id}},
        "altId": client_id,
        "role": [{"coding": [coding(ROLE_SYSTEM, role)]}],
        "requestor": True,
    }
    network = _network(source_address)
    if network is not None:
        client["network"] = network
    purpose = _purpose(purpose_of_use)
    if purpose is not None:
        client["purposeOfUse"] = purpose
    server = {
        "type": {"coding": [SERVER_AGENT_TYPE]},
        "who": {"display": OBSERVER},
        "requestor": False,
    }
    return [client, server]


_SOURCE: dict[str, dict[str, Any]] = {}


def _source(channel: str) -> dict[str, Any]:
    """The ``source`` element per channel, built once (events share it; orjson only reads it)."""
    found = _SOURCE.get(channel)
    if found is None:
        found = _SOURCE[channel] = {
            "site": channel,
            "observer": {"display": OBSERVER},
            "type": [coding(SOURCE_TYPE_SYSTEM, "4", "Application Server")],
        }
    return found


@lru_cache(maxsize=64)
def _type_coding(event_type: str) -> dict[str, str]:
    type_system, type_display = TYPE_DISPLAY.get(event_type, (DCM_SYSTEM, event_type))
    return coding(type_system, event_type, type_display)


@lru_cache(maxsize=128)
def _subtype(subtype: str) -> list[dict[str, str]]:
    system = INTERACTION_SYSTEM if subtype in ACTIONS else SUBTYPE_SYSTEM
    return [coding(system, subtype)]


def _entity(pair: tuple[dict[str, str], dict[str, str]], **fields: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": pair[0], "role": pair[1]}
    out.update({k: v for k, v in fields.items() if v is not None})
    return out


# The entity kinds of an event.  :mod:`audit.rows` renders the same four from these functions.
def resource_entity(reference: str) -> dict[str, Any]:
    return _entity(RESOURCE_ENTITY, what={"reference": reference})


def patient_entity(patient_id: str) -> dict[str, Any]:
    return _entity(PATIENT_ENTITY, what={"reference": f"Patient/{patient_id}"})


def query_entity(query: str) -> dict[str, Any]:
    return _entity(QUERY_ENTITY, query=base64.b64encode(query.encode()).decode(), description=query)


def request_entity(request_id: str) -> dict[str, Any]:
    return {"type": REQUEST_ENTITY_TYPE, "what": {"identifier": {"value": request_id}}}


def event_patients(patient_ids: Iterable[str], context: RequestContext) -> list[str]:
    """The patients an event names, in order, once each (the compartment's patients too)."""
    ids = [*patient_ids, *context.patient_ids] if context.patient_ids else patient_ids
    return [pid for pid in dict.fromkeys(ids) if pid]


def build_event(
    *,
    context: RequestContext,
    event_type: str,
    subtype: str | None,
    action: str | None = None,
    outcome: str = SUCCESS,
    outcome_desc: str | None = None,
    targets: Sequence[Target] = (),
    references: Sequence[str] = (),
    patient_ids: Iterable[str] = (),
    query: str | None = None,
    recorded_us: int,
    event_id: str | None = None,
    extra_entities: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The AuditEvent for one interaction (every other builder ends here).

    ``references`` are more targets, already formatted (after ``targets``).
    Constant parts (type/subtype codings, source, agents, purpose) are cached
    and shared between events: builders and the chain writer only read them.
    :func:`audit.rows.render` produces the same bytes without the dict; a
    property test holds the two together.
    """
    event: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": event_id or new_event_id(),
        "type": _type_coding(event_type),
        "action": action or ACTIONS.get(subtype or "", "E"),
        "recorded": format_recorded(recorded_us),
        "outcome": outcome,
        "agent": _agents(context.client_id, context.role, context.source_address, context.purpose_of_use),
        "source": _source(context.channel),
    }
    if subtype:
        event["subtype"] = _subtype(subtype)
    if outcome_desc:
        event["outcomeDesc"] = outcome_desc
    purpose = _purpose(context.purpose_of_use)
    if purpose is not None:
        event["purposeOfEvent"] = purpose
    entities = [resource_entity(t.reference) for t in targets]
    entities.extend(resource_entity(ref) for ref in references)
    entities.extend(patient_entity(pid) for pid in event_patients(patient_ids, context))
    if query is not None:
        entities.append(query_entity(query))
    entities.extend(extra_entities)
    if context.request_id:
        entities.append(request_entity(context.request_id))
    if entities:
        event["entity"] = entities
    return event


def rest_event(
    context: RequestContext,
    interaction: str,
    *,
    recorded_us: int,
    targets: Sequence[Target] = (),
    patient_ids: Iterable[str] = (),
    query: str | None = None,
    outcome: str = SUCCESS,
    outcome_desc: str | None = None,
) -> dict[str, Any]:
    """A BALP RESTful event (create/read/vread/update/delete/search-type/history-*)."""
    return build_event(
        context=context,
        event_type="rest",
        subtype=interaction,
        targets=targets,
        patient_ids=patient_ids,
        query=query,
        outcome=outcome,
        outcome_desc=outcome_desc,
        recorded_us=recorded_us,
    )


def import_action(interaction: str) -> str:
    """The action of an HL7 import event (C unless the resulting interaction says otherwise)."""
    return ACTIONS.get(interaction, "C")


def import_event(
    context: RequestContext,
    interaction: str,
    *,
    recorded_us: int,
    targets: Sequence[Target] = (),
    patient_ids: Iterable[str] = (),
    message_control_id: str | None = None,
    message_type: str | None = None,
    outcome: str = SUCCESS,
    outcome_desc: str | None = None,
) -> dict[str, Any]:
    """A change that arrived as an HL7 v2 message (DICOM 110107 Import).

    ``interaction`` is the resulting FHIR interaction (create/update/delete), or
    ``hl7-message`` for the one event per received message (any outcome).
    """
    extra: list[dict[str, Any]] = []
    if message_control_id is not None:
        extra.append(
            _entity(
                JOB_ENTITY,
                what={"identifier": {"system": HL7_MESSAGE_SYSTEM, "value": message_control_id}},
                name=message_type,
            )
        )
    return build_event(
        context=context,
        event_type="110107",
        subtype=interaction,
        action=import_action(interaction),
        targets=targets,
        patient_ids=patient_ids,
        outcome=outcome,
        outcome_desc=outcome_desc,
        recorded_us=recorded_us,
        extra_entities=extra,
    )


def export_event(
    context: RequestContext,
    *,
    recorded_us: int,
    query: str,
    patient_ids: Iterable[str] = (),
    outcome: str = SUCCESS,
) -> dict[str, Any]:
    """A disclosure of audit records (``carebridge audit export``, DICOM 110106 Export)."""
    return build_event(
        context=context,
        event_type="110106",
        subtype="export",
        action="R",
        patient_ids=patient_ids,
        query=query,
        outcome=outcome,
        recorded_us=recorded_us,
    )
