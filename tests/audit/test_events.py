"""AuditEvent builders follow IHE BALP and validate as FHIR R4 (fhir.resources R4B)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from audit.events import (
    Target,
    export_event,
    import_event,
    outcome_for_status,
    rest_event,
)
from audit.rows import canonical, index_fields
from fhir_store.instants import now_us
from tests.audit.conftest import CTX


def _valid(event: dict[str, Any]) -> Any:  # an AuditEvent model; its optional fields are read freely
    # validate what is stored: the canonical bytes
    return AuditEvent.model_validate(orjson.loads(canonical(event)))


@pytest.mark.parametrize(
    ("interaction", "action"),
    [
        ("create", "C"),
        ("read", "R"),
        ("vread", "R"),
        ("update", "U"),
        ("delete", "D"),
        ("search-type", "E"),
        ("history", "R"),
    ],
)
def test_rest_events_validate(interaction: str, action: str) -> None:
    event = rest_event(
        CTX,
        interaction,
        recorded_us=now_us(),
        targets=[Target("Encounter", "e1", 3)],
        patient_ids=["p1"],
        query="Encounter?subject=Patient/p1" if interaction == "search-type" else None,
    )
    model = _valid(event)
    assert model.action == action
    assert model.type.system == "http://terminology.hl7.org/CodeSystem/audit-event-type"
    assert model.type.code == "rest"
    assert model.subtype[0].system == "http://hl7.org/fhir/restful-interaction"
    assert model.subtype[0].code == interaction
    assert model.outcome == "0"
    client = model.agent[0]
    assert client.requestor is True
    assert client.who.identifier.value == "his-bvdk"
    assert client.role[0].coding[0].code == "his_integration"
    assert client.network.address == "10.1.2.3" and client.network.type == "2"
    assert model.source.observer.display == "carebridge"
    assert model.purposeOfEvent[0].coding[0].code == "TREAT"
    refs = {(e.what.reference if e.what else None, e.role.code if e.role else None) for e in model.entity}
    assert ("Encounter/e1/_history/3", "4") in refs
    assert ("Patient/p1", "1") in refs
    idx = index_fields(event)
    assert idx.request_id == "req-0001"
    assert idx.patient_ids == ("p1",)
    assert idx.entity == "Encounter/e1/_history/3"


def test_import_and_export_events_validate() -> None:
    imported = import_event(
        CTX,
        "hl7-message",
        recorded_us=now_us(),
        message_control_id="MSG0001",
        message_type="ADT^A01",
        patient_ids=["p1"],
        outcome="4",
    )
    model = _valid(imported)
    assert (model.type.system, model.type.code) == ("http://dicom.nema.org/resources/ontology/DCM", "110107")
    assert model.outcome == "4"
    exported = export_event(CTX, recorded_us=now_us(), query="format=csv&patient=p1", patient_ids=["p1"])
    model = _valid(exported)
    assert model.type.code == "110106"
    assert model.subtype[0].code == "export"


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "0"), (201, "0"), (400, "4"), (404, "4"), (401, "12"), (403, "12"), (500, "8")],
)
def test_outcome_for_status(status: int, outcome: str) -> None:
    assert outcome_for_status(status) == outcome
    _valid(rest_event(CTX, "read", recorded_us=now_us(), outcome=outcome))
