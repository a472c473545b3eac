"""A patient-bound context sees only that patient's compartment, on both backends.

Outside the compartment the store answers exactly as for an id that does not
exist (``common.Concealed``, a ``NotFound``): same status, message and location
with the id swapped, so a patient cannot tell which ids exist (issue #16 item 8).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from common.errors import CarebridgeError, Concealed, Forbidden, Gone, NotFound
from fhir_store.model import Create, Delete, RequestContext, Update
from fhir_store.repository import FhirStore
from fhir_store.search import parse_query
from tests.fhir_store.conftest import encounter, patient


def _patient_ctx(pid: str) -> RequestContext:
    return RequestContext("r", client_id="app", role="patient", channel="rest", patient_ids=(pid,))


def test_patient_context_is_confined(store: FhirStore, ctx: RequestContext) -> None:
    mine, other = (r.stored.id for r in store.transact([Create(patient()), Create(patient())], ctx))  # type: ignore[union-attr]
    visits = store.transact(
        [Create(encounter(f"Patient/{mine}", "C1")), Create(encounter(f"Patient/{other}", "C2"))], ctx
    )
    own = _patient_ctx(mine)

    assert store.read("Patient", mine, own).id == mine
    with pytest.raises(Concealed):
        store.read("Patient", other, own)
    with pytest.raises(Concealed):
        store.read("Encounter", visits[1].stored.id, own)  # type: ignore[union-attr]
    assert [m.id for m in store.search(parse_query("Encounter", []), own).matches] == [visits[0].stored.id]  # type: ignore[union-attr]
    assert [m.id for m in store.search(parse_query("Patient", [("gender", "male")]), own).matches] == [mine]
    with pytest.raises(Forbidden):
        store.history("Patient", context=own)
    with pytest.raises(Concealed):
        store.everything(other, own)
    assert {r.resource_type for r in store.everything(mine, own)} == {"Patient", "Encounter"}


def _failure(call: Callable[..., Any], *args: Any, **kwargs: Any) -> CarebridgeError:
    with pytest.raises(CarebridgeError) as caught:
        call(*args, **kwargs)
    return caught.value


def _same_answer(concealed: CarebridgeError, missing: CarebridgeError, real_id: str, fake_id: str) -> None:
    """What the caller sees (status, issue code, text, location) is the missing case's, id swapped."""
    assert isinstance(concealed, Concealed) and isinstance(missing, NotFound)
    assert (
        (concealed.http_status, concealed.issue_code)
        == (missing.http_status, missing.issue_code)
        == (
            404,
            "not-found",
        )
    )
    assert concealed.message.replace(real_id, fake_id) == missing.message
    assert (concealed.location or "").replace(real_id, fake_id) == (missing.location or "")
    assert "compartment" in concealed.reason  # what the audit trail records, never sent


def test_other_patients_ids_answer_like_missing_ones(store: FhirStore, ctx: RequestContext) -> None:
    mine, other = (r.stored.id for r in store.transact([Create(patient()), Create(patient())], ctx))  # type: ignore[union-attr]
    visit = store.transact([Create(encounter(f"Patient/{other}", "O1"))], ctx)[0].stored
    assert visit is not None
    own = _patient_ctx(mine)
    fake = str(uuid.uuid4())
    for kind, real in (("Patient", other), ("Encounter", visit.id)):
        _same_answer(
            _failure(store.read, kind, real, own),
            _failure(store.read, kind, fake, own),
            real,
            fake,
        )
        _same_answer(
            _failure(store.vread, kind, real, 1, own),
            _failure(store.vread, kind, fake, 1, own),
            real,
            fake,
        )
        _same_answer(
            _failure(store.history, kind, real, context=own),
            _failure(store.history, kind, fake, context=own),
            real,
            fake,
        )
    _same_answer(
        _failure(store.everything, other, own),
        _failure(store.everything, fake, own),
        other,
        fake,
    )


def test_deleted_resources_of_other_patients_are_not_gone_but_missing(
    store: FhirStore, ctx: RequestContext
) -> None:
    """A 410 would say "it existed": outside the compartment a deletion answers like a missing id."""
    mine, other = (r.stored.id for r in store.transact([Create(patient()), Create(patient())], ctx))  # type: ignore[union-attr]
    theirs = store.transact([Create(encounter(f"Patient/{other}", "D1"))], ctx)[0].stored
    ours = store.transact([Create(encounter(f"Patient/{mine}", "D2"))], ctx)[0].stored
    assert theirs is not None and ours is not None
    store.transact([Delete("Encounter", theirs.id), Delete("Encounter", ours.id)], ctx)
    own = _patient_ctx(mine)
    fake = str(uuid.uuid4())

    _same_answer(
        _failure(store.read, "Encounter", theirs.id, own),
        _failure(store.read, "Encounter", fake, own),
        theirs.id,
        fake,
    )
    _same_answer(
        _failure(store.vread, "Encounter", theirs.id, 2, own),
        _failure(store.vread, "Encounter", fake, 2, own),
        theirs.id,
        fake,
    )
    # the deletion alone on a history page does not reveal it either
    _same_answer(
        _failure(store.history, "Encounter", theirs.id, count=1, context=own),
        _failure(store.history, "Encounter", fake, count=1, context=own),
        theirs.id,
        fake,
    )
    # the caller's own deleted visit is still a 410, and its history is readable
    assert isinstance(_failure(store.read, "Encounter", ours.id, own), Gone)
    assert len(store.history("Encounter", ours.id, context=own)[0]) == 2


def test_a_visit_moved_to_another_patient_is_concealed_in_every_version(
    store: FhirStore, ctx: RequestContext
) -> None:
    """History is checked per version: a visit repointed to another patient hides its old versions too."""
    mine, other = (r.stored.id for r in store.transact([Create(patient()), Create(patient())], ctx))  # type: ignore[union-attr]
    visit = store.transact([Create(encounter(f"Patient/{mine}", "M1"))], ctx)[0].stored
    assert visit is not None
    store.transact([Update("Encounter", visit.id, encounter(f"Patient/{other}", "M1", id=visit.id))], ctx)
    own = _patient_ctx(mine)
    assert isinstance(_failure(store.history, "Encounter", visit.id, context=own), Concealed)
    assert isinstance(_failure(store.read, "Encounter", visit.id, own), Concealed)
