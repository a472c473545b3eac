"""How an AuditEvent becomes a chain row: canonical bytes, index columns, patient links.

Why this is its own module: :mod:`audit.events` says *what* an event contains
(IHE BALP); this module says how it is *stored* -- the canonical JSON that is
hashed, and the search columns derived from it, which the verifier re-derives
from the stored bytes (:func:`index_fields`), so an edited column is caught.

Two ways lead to the same row:

* :func:`prepare` takes an event dict (failures, denials, HL7 messages, consent
  and privacy events: rare) and serializes it with orjson, sorted keys;
* :func:`render` is the hot path for every change and every read.  Per caller
  and interaction (agent, purpose, type, subtype, action, outcome) it
  serializes a template event once, with placeholders for the parts that
  vary (entities, id, time), keeps the canonical bytes around the
  placeholders, and then only splices the variable parts in, each one
  serialized by orjson as well.  The index columns come from the inputs, not
  from re-walking the event, which is why a read event costs a fraction of
  building, serializing and indexing it from scratch (docs/benchmarks.md,
  "Design figures behind module choices").
  ``tests/audit/test_rows.py`` checks with hypothesis that both ways give the
  same bytes and columns; the verifier re-derives columns from the stored
  bytes, so a divergence could not go unnoticed either.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Final, NamedTuple

import orjson

from audit.codes import SUCCESS
from audit.events import (
    build_event,
    event_patients,
    format_recorded,
    new_event_id,
    patient_entity,
    query_entity,
    request_entity,
    resource_entity,
)
from fhir_store import RequestContext, to_us

#: the columns an event's content determines (searched by ``GET /fhir/AuditEvent``); verify compares them
INDEX_COLUMNS: Final = (
    "event_id",
    "recorded_us",
    "action",
    "type",
    "subtype",
    "outcome",
    "agent",
    "patient_id",
    "entity",
    "purpose",
    "request_id",
)
#: ``audit_event`` columns in the order the writer inserts them
COLUMNS: Final = ("seq", *INDEX_COLUMNS, "content", "prev_hash", "hash", "mac")


class Prepared(NamedTuple):
    """One event ready for the chain: its bytes, its index columns and its patients."""

    content: bytes
    #: :data:`INDEX_COLUMNS`, in order
    columns: tuple[Any, ...]
    patient_ids: tuple[str, ...]


def canonical(event: dict[str, Any]) -> bytes:
    """The bytes that are hashed and stored: compact JSON with sorted keys."""
    return orjson.dumps(event, option=orjson.OPT_SORT_KEYS)


@dataclass(frozen=True)
class IndexFields:
    """The searchable columns of ``audit_event``, derived from the event itself.

    Derived by one function for writer and verifier alike, so an edited index
    column (e.g. patient_id changed to hide an access) is detected.
    """

    event_id: str
    recorded_us: int
    action: str
    type: str
    subtype: str | None
    outcome: str
    agent: str | None
    patient_ids: tuple[str, ...]
    entity: str | None
    purpose: str | None
    request_id: str | None

    def columns(self) -> tuple[Any, ...]:
        return (
            self.event_id,
            self.recorded_us,
            self.action,
            self.type,
            self.subtype,
            self.outcome,
            self.agent,
            self.patient_ids[0] if self.patient_ids else None,
            self.entity,
            self.purpose,
            self.request_id,
        )


def event_keys(entity: str | None, patient_ids: Sequence[str]) -> list[tuple[str, bool]]:
    """The ``audit_event_key`` rows of an event: ``(key, names a patient)``, patients first.

    From the index columns (``patient_ids`` already clipped, ``entity`` as
    stored), so writer, migration and verifier derive the same rows.  The
    entity is keyed without its ``/_history/<v>`` suffix (an entity search
    matches every version) and shares the row of a patient with the same
    reference, which makes a Patient read or change a single key row.
    """
    base = None if entity is None else entity.partition("/_history/")[0]
    if len(patient_ids) == 1:  # the common case, without building a dict
        key = "Patient/" + patient_ids[0]
        return [(key, True)] if base is None or base == key else [(key, True), (base, False)]
    keys = dict.fromkeys(["Patient/" + pid for pid in patient_ids], True)
    if base is not None:
        keys.setdefault(base, False)
    return list(keys.items())


def _clip(value: str | None, size: int) -> str | None:
    return None if value is None else value[:size]


def index_fields(event: dict[str, Any]) -> IndexFields:
    patients: list[str] = []
    entity: str | None = None
    request_id: str | None = None
    for ent in event.get("entity", ()):
        what = ent.get("what") or {}
        role = (ent.get("role") or {}).get("code")
        ref = what.get("reference")
        if role == "1" and ref:
            patients.append(ref.split("/", 1)[1])
        elif ref and entity is None:
            entity = ref
        elif (ent.get("type") or {}).get("code") == "XrequestId":
            request_id = (what.get("identifier") or {}).get("value")
    if entity is None and patients:
        entity = f"Patient/{patients[0]}"
    agent = event["agent"][0].get("altId") if event.get("agent") else None
    purposes = event.get("purposeOfEvent") or ()
    purpose = purposes[0]["coding"][0]["code"] if purposes else None
    subtypes = event.get("subtype") or ()
    return IndexFields(
        event_id=event["id"],
        recorded_us=to_us(datetime.fromisoformat(event["recorded"])),
        action=event["action"],
        type=event["type"]["code"],
        subtype=subtypes[0]["code"] if subtypes else None,
        outcome=event["outcome"],
        agent=_clip(agent, 128),
        patient_ids=tuple(p[:64] for p in dict.fromkeys(patients)),
        entity=_clip(entity, 128),
        purpose=_clip(purpose, 64),
        request_id=_clip(request_id, 128),
    )


def row_values(
    seq: int, event: dict[str, Any], content: bytes, prev: bytes, digest: bytes
) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Column values of one row and its patients, as the verifier expects them."""
    idx = index_fields(event)
    values = dict(zip(COLUMNS, (seq, *idx.columns(), content, prev, digest), strict=False))
    return values, idx.patient_ids


def prepare(event: dict[str, Any]) -> Prepared:
    """An event dict made ready for the chain (the general path)."""
    idx = index_fields(event)
    return Prepared(canonical(event), idx.columns(), idx.patient_ids)


# -- rendering from templates -------------------------------------------------------

_HOLE: Final = "\u2063cb-hole\u2063"  # invisible separators: no caller value is expected to equal it
_HOLE_JSON: Final = orjson.dumps(_HOLE)


def _around(raw: bytes, hole: bytes = _HOLE_JSON) -> tuple[bytes, bytes]:
    """An entity's canonical bytes before and after its one variable value (the latter with a comma)."""
    before, found, after = raw.partition(hole)
    if not found or hole in after:
        raise AssertionError("entity template must hold exactly one placeholder")
    return before, after + b","


_RESOURCE: Final = _around(canonical(resource_entity(_HOLE)))
_PATIENT: Final = _around(canonical(patient_entity(_HOLE)), orjson.dumps(f"Patient/{_HOLE}"))
_REQUEST: Final = _around(canonical(request_entity(_HOLE)))


class _Template(NamedTuple):
    #: canonical bytes between the placeholders: [entity list,] id, recorded
    pieces: tuple[bytes, ...]
    entities: bool
    #: index columns fixed by the template: action, type, subtype, outcome, agent, purpose
    action: str
    type: str
    subtype: str | None
    outcome: str
    agent: str | None
    purpose: str | None


@lru_cache(maxsize=4096)
def _template(
    client_id: str,
    role: str,
    channel: str,
    source_address: str | None,
    purpose_of_use: str | None,
    event_type: str,
    subtype: str | None,
    action: str | None,
    outcome: str,
    entities: bool,
) -> _Template | None:
    """The canonical bytes of an event of this caller and kind, cut at its variable parts.

    ``None`` when a caller value collides with the placeholder: :func:`render`
    then takes the general path.  Keyed per caller, not per request (each
    request has its own id, which is an entity, not part of the template).
    """
    context = RequestContext(
        request_id="",
        client_id=client_id,
        role=role,
        channel=channel,  # type: ignore[arg-type]
        source_address=source_address,
        purpose_of_use=purpose_of_use,
    )
    event = build_event(
        context=context,
        event_type=event_type,
        subtype=subtype,
        action=action,
        outcome=outcome,
        recorded_us=0,
        event_id=_HOLE,
    )
    idx = index_fields(event)
    event["recorded"] = _HOLE
    if entities:
        event["entity"] = _HOLE
    pieces = tuple(canonical(event).split(_HOLE_JSON))
    if len(pieces) != (4 if entities else 3):
        return None
    if entities:  # the list brackets around the entities belong to the template
        pieces = (pieces[0] + b"[", b"]" + pieces[1], *pieces[2:])
    return _Template(pieces, entities, idx.action, idx.type, idx.subtype, idx.outcome, idx.agent, idx.purpose)


def render(
    context: RequestContext,
    event_type: str,
    subtype: str | None,
    *,
    recorded_us: int,
    references: Sequence[str] = (),
    patient_ids: Iterable[str] = (),
    query: str | None = None,
    action: str | None = None,
    outcome: str = SUCCESS,
) -> Prepared:
    """``prepare(build_event(...))`` for the same arguments, without building the event.

    ``references`` are the target references (``Type/id[/_history/v]``), in
    entity order, as :class:`audit.events.Target` formats them.
    """
    patients = event_patients(patient_ids, context)
    request_id = context.request_id
    template = _template(
        context.client_id,
        context.role,
        context.channel,
        context.source_address,
        context.purpose_of_use,
        event_type,
        subtype,
        action,
        outcome,
        bool(references or patients or query is not None or request_id),
    )
    if template is None:
        return prepare(
            build_event(
                context=context,
                event_type=event_type,
                subtype=subtype,
                action=action,
                outcome=outcome,
                references=references,
                patient_ids=patients,
                query=query,
                recorded_us=recorded_us,
            )
        )
    dumps = orjson.dumps
    event_id = new_event_id()
    pieces = template.pieces
    if template.entities:
        # every entity ends in b",": the last one's comma becomes the closing bracket
        parts = [pieces[0]]
        for ref in references:
            parts += (_RESOURCE[0], dumps(ref), _RESOURCE[1])
        for pid in patients:
            parts += (_PATIENT[0], dumps("Patient/" + pid), _PATIENT[1])
        if query is not None:
            parts += (canonical(query_entity(query)), b",")
        if request_id:
            parts += (_REQUEST[0], dumps(request_id), _REQUEST[1])
        parts[-1] = parts[-1][:-1] + pieces[1]
    else:
        parts = [pieces[0]]
    parts += (dumps(event_id), pieces[-2], dumps(format_recorded(recorded_us)), pieces[-1])
    clipped = tuple([p[:64] for p in patients])
    if references:
        entity: str | None = references[0][:128]
    else:
        entity = f"Patient/{patients[0]}"[:128] if patients else None
    columns = (
        event_id,
        recorded_us,
        template.action,
        template.type,
        template.subtype,
        template.outcome,
        template.agent,
        clipped[0] if clipped else None,
        entity,
        template.purpose,
        request_id[:128] if request_id else None,
    )
    return Prepared(b"".join(parts), columns, clipped)
