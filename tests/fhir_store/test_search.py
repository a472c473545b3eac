"""Search semantics over the index tables, on both backends."""

from __future__ import annotations

import pytest

from common.errors import InvalidInput
from fhir_store.model import Create, RequestContext
from fhir_store.repository import FhirStore
from fhir_store.search import parse_query
from tests.fhir_store.conftest import MRN, encounter, patient


def _ids(store: FhirStore, resource_type: str, *params: tuple[str, str]) -> set[str]:
    return {m.id for m in store.search(parse_query(resource_type, list(params))).matches}


@pytest.fixture
def people(store: FhirStore, ctx: RequestContext) -> dict[str, str]:
    bodies = {
        "an": patient("S1"),
        "binh": patient(
            "S2",
            name=[{"family": "Trần", "given": ["Thị", "Bình"]}],
            gender="female",
            birthDate="1990-07-04",
            telecom=[{"system": "email", "value": "binh@example.vn"}],
        ),
        "dung": patient("S3", name=[{"family": "ĐỖ", "given": ["DUNG"]}], birthDate="2001-02-25"),
    }
    results = store.transact([Create(b) for b in bodies.values()], ctx)
    return {key: r.stored.id for key, r in zip(bodies, results, strict=True)}  # type: ignore[union-attr]


def test_string_search_is_accent_and_case_insensitive(store: FhirStore, people: dict[str, str]) -> None:
    assert _ids(store, "Patient", ("name", "nguyen")) == {people["an"]}
    assert _ids(store, "Patient", ("family", "do")) == {people["dung"]}
    assert _ids(store, "Patient", ("family:exact", "Trần")) == {people["binh"]}
    assert _ids(store, "Patient", ("family:exact", "tran")) == set()
    assert _ids(store, "Patient", ("name:contains", "inh")) == {people["binh"]}


def test_token_date_and_missing(store: FhirStore, people: dict[str, str]) -> None:
    assert _ids(store, "Patient", ("identifier", f"{MRN}|S2")) == {people["binh"]}
    assert _ids(store, "Patient", ("identifier", "S2")) == {people["binh"]}
    assert _ids(store, "Patient", ("gender", "female")) == {people["binh"]}
    assert _ids(store, "Patient", ("phone", "0912345678")) == {people["an"], people["dung"]}
    assert _ids(store, "Patient", ("email", "binh@example.vn")) == {people["binh"]}
    assert _ids(store, "Patient", ("birthdate", "ge1990")) == {people["binh"], people["dung"]}
    assert _ids(store, "Patient", ("birthdate", "lt1990-07-04")) == {people["an"]}
    assert _ids(store, "Patient", ("birthdate", "1990-07")) == {people["binh"]}
    assert _ids(store, "Patient", ("birthdate", "ne1990-07-04")) == {people["an"], people["dung"]}
    assert _ids(store, "Patient", ("email:missing", "true")) == {people["an"], people["dung"]}
    assert _ids(store, "Patient", ("gender", "male,female")) == set(people.values())


def test_sort_and_snapshot_paging_survive_concurrent_insert(
    store: FhirStore, ctx: RequestContext, people: dict[str, str]
) -> None:
    query = parse_query("Patient", [("_sort", "-birthdate"), ("_count", "2")])
    first = store.search(query)
    assert [m.id for m in first.matches] == [people["dung"], people["binh"]]
    assert first.has_next and first.page_token and first.total == 3
    store.transact([Create(patient("S4", birthDate="2020-01-01"))], ctx)
    follow = parse_query("Patient", [("_sort", "-birthdate"), ("_count", "2"), ("_offset", "2")])
    follow.page_token = first.page_token
    second = store.search(follow)
    assert [m.id for m in second.matches] == [people["an"]] and not second.has_next


def test_include_revinclude_and_references(
    store: FhirStore, ctx: RequestContext, people: dict[str, str]
) -> None:
    store.transact([Create(encounter(f"Patient/{people['an']}", "V1", status="finished"))], ctx)
    page = store.search(
        parse_query("Encounter", [("patient", people["an"]), ("_include", "Encounter:subject")])
    )
    assert len(page.matches) == 1 and [r.id for r in page.included] == [people["an"]]
    page = store.search(parse_query("Patient", [("_id", people["an"]), ("_revinclude", "Encounter:subject")]))
    assert [r.resource_type for r in page.included] == ["Encounter"]
    assert _ids(store, "Encounter", ("status", "finished"), ("date", "ge2026-11-20")) == {page.included[0].id}
    assert _ids(store, "Encounter", ("date", "lt2026-11-19")) == set()


def test_summary_count_and_total(store: FhirStore, people: dict[str, str]) -> None:
    assert store.search(parse_query("Patient", [("_summary", "count")])).total == 3
    query = parse_query("Patient", [("_count", "1"), ("_total", "accurate")])
    assert store.search(query).total == 3


@pytest.mark.parametrize(
    ("params", "location"),
    [
        ([("colour", "red")], "colour"),
        ([("birthdate", "1990-13")], "birthdate"),
        ([("_sort", "gender")], "_sort"),
    ],
)
def test_bad_search_parameters_are_refused(
    store: FhirStore, params: list[tuple[str, str]], location: str
) -> None:
    with pytest.raises(InvalidInput) as info:
        store.search(parse_query("Patient", params))
    assert info.value.location == location
