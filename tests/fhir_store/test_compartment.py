"""A patient-bound context sees only that patient's compartment, on both backends."""

from __future__ import annotations

import pytest

from common.errors import Forbidden
from fhir_store.model import Create, RequestContext
from fhir_store.repository import FhirStore
from fhir_store.search import parse_query
from tests.fhir_store.conftest import encounter, patient


def test_patient_context_is_confined(store: FhirStore, ctx: RequestContext) -> None:
    mine, other = (r.stored.id for r in store.transact([Create(patient()), Create(patient())], ctx))  # type: ignore[union-attr]
    visits = store.transact(
        [Create(encounter(f"Patient/{mine}", "C1")), Create(encounter(f"Patient/{other}", "C2"))], ctx
    )
    own = RequestContext("r", client_id="app", role="patient", channel="rest", patient_ids=(mine,))

    assert store.read("Patient", mine, own).id == mine
    with pytest.raises(Forbidden):
        store.read("Patient", other, own)
    with pytest.raises(Forbidden):
        store.read("Encounter", visits[1].stored.id, own)  # type: ignore[union-attr]
    assert [m.id for m in store.search(parse_query("Encounter", []), own).matches] == [visits[0].stored.id]  # type: ignore[union-attr]
    assert [m.id for m in store.search(parse_query("Patient", [("gender", "male")]), own).matches] == [mine]
    with pytest.raises(Forbidden):
        store.history("Patient", context=own)
    with pytest.raises(Forbidden):
        store.everything(other, own)
    assert {r.resource_type for r in store.everything(mine, own)} == {"Patient", "Encounter"}
