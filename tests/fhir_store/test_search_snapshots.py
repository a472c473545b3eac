"""Paging snapshots belong to their caller and their query (issue #16 item 4), on both backends."""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import parse_qsl

import pytest
from sqlalchemy import select

from common.errors import Concealed, InvalidInput
from fhir_store.blind_index import blind_query_text
from fhir_store.model import Create, RequestContext
from fhir_store.repository import FhirStore, SearchPage
from fhir_store.schema import search_snapshot
from fhir_store.search import parse_query
from tests.fhir_store.conftest import encounter, patient

CLINICIAN = RequestContext("c", client_id="clinician-1", role="clinician", channel="rest")


def _page(
    store: FhirStore, params: Sequence[tuple[str, str]], context: RequestContext, token: str | None = None
) -> SearchPage:
    query = parse_query("Patient", params)
    query.page_token = token
    return store.search(query, context)


@pytest.fixture
def five(store: FhirStore, ctx: RequestContext) -> list[str]:
    results = store.transact([Create(patient(gender="female")) for _ in range(5)], ctx)
    return [r.stored.id for r in results if r.stored is not None]


def test_the_owner_pages_through_the_frozen_list(store: FhirStore, five: list[str]) -> None:
    query = [("gender", "female"), ("_sort", "_id"), ("_count", "2")]
    first = _page(store, query, CLINICIAN)
    assert first.page_token and first.has_next
    second = _page(store, [*query, ("_offset", "2")], CLINICIAN, first.page_token)
    third = _page(store, [*query, ("_offset", "4")], CLINICIAN, first.page_token)
    seen = [m.id for p in (first, second, third) for m in p.matches]
    assert seen == sorted(five)
    # parameter order and _count are not "other search parameters"
    reordered = [("_count", "3"), ("_sort", "_id"), ("gender", "female"), ("_offset", "2")]
    assert [m.id for m in _page(store, reordered, CLINICIAN, first.page_token).matches] == sorted(five)[2:5]


def test_another_caller_gets_404_not_the_frozen_ids(
    store: FhirStore, ctx: RequestContext, five: list[str]
) -> None:
    """The attack: a clinician's token replayed with a patient's (or another client's) context."""
    mine = store.transact([Create(patient(gender="female"))], ctx)[0].stored
    assert mine is not None
    query = [("gender", "female"), ("_count", "2")]
    token = _page(store, query, CLINICIAN, None).page_token
    assert token
    own = RequestContext("p", client_id="patient-app", role="patient", channel="rest", patient_ids=(mine.id,))
    other_client = RequestContext("o", client_id="clinician-2", role="clinician", channel="rest")
    for intruder in (own, other_client, None):
        with pytest.raises(Concealed) as refused:
            _page(store, [*query, ("_offset", "2")], intruder, token)  # type: ignore[arg-type]
        assert refused.value.http_status == 404 and refused.value.location == "_page_token"
    # the patient's own search still works and shows only the patient
    assert [m.id for m in _page(store, query, own).matches] == [mine.id]


@pytest.mark.parametrize(
    "changed",
    [
        [("gender", "male"), ("_count", "2")],
        [("gender", "female"), ("birthdate", "1985-03-12"), ("_count", "2")],
        [("gender", "female"), ("_sort", "-birthdate"), ("_count", "2")],
        [("gender", "female"), ("_count", "2"), ("_total", "accurate")],
    ],
)
def test_the_same_token_with_other_parameters_is_404(
    store: FhirStore, five: list[str], changed: list[tuple[str, str]]
) -> None:
    token = _page(store, [("gender", "female"), ("_count", "2")], CLINICIAN).page_token
    assert token
    with pytest.raises(Concealed):
        _page(store, [*changed, ("_offset", "2")], CLINICIAN, token)


def test_the_token_on_another_type_is_404(store: FhirStore, ctx: RequestContext, five: list[str]) -> None:
    token = _page(store, [("gender", "female"), ("_count", "2")], CLINICIAN).page_token
    store.transact([Create(encounter(f"Patient/{pid}", f"V{n}")) for n, pid in enumerate(five)], ctx)
    query = parse_query("Encounter", [("_count", "2"), ("_offset", "2")])
    query.page_token = token
    with pytest.raises(Concealed):
        store.search(query, CLINICIAN)


def test_an_unknown_token_is_still_400(store: FhirStore, five: list[str]) -> None:
    with pytest.raises(InvalidInput):
        _page(store, [("gender", "female"), ("_offset", "2")], CLINICIAN, "nope")


def test_tokens_are_not_stored_or_audited_in_clear(store: FhirStore, five: list[str]) -> None:
    first = _page(store, [("gender", "female"), ("_count", "2")], CLINICIAN)
    assert first.page_token
    with store.engine.connect() as conn:
        rows = conn.execute(select(search_snapshot.c.token, search_snapshot.c.query)).all()
    assert rows and all(first.page_token not in (r[0] + r[1]) for r in rows)
    assert all("female" not in r[1] and "clinician-1" not in r[1] for r in rows)  # keyed digest only
    recorded = blind_query_text(
        "Patient", f"gender=female&_count=2&_offset=2&_page_token={first.page_token}", store.cipher.blind
    )
    assert first.page_token not in recorded
    values = dict(parse_qsl(recorded))
    assert values["gender"] == "female" and values["_page_token"]  # blinded, still comparable by an officer
