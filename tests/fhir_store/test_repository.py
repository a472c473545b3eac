"""FhirStore against real SQLite and PostgreSQL: versions, history, deletes, conditionals, merge."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from common.errors import Gone, InvalidInput, MultipleMatches, NotFound, PreconditionFailed, VersionConflict
from fhir_store.model import (
    ConditionalUpdate,
    Create,
    Delete,
    MergePatients,
    RequestContext,
    Update,
)
from fhir_store.repository import FhirStore
from fhir_store.search import parse_query
from tests.fhir_store.conftest import MRN, encounter, patient


def test_create_read_update_keeps_every_version(store: FhirStore, ctx: RequestContext) -> None:
    created = store.transact([Create(patient("BN1"))], ctx)[0]
    assert created.status == 201 and created.stored is not None
    pid = created.stored.id
    first = store.read("Patient", pid)
    assert first.version_id == 1 and first.resource()["meta"]["versionId"] == "1"

    changed = patient("BN1", gender="female", id=pid)
    updated = store.transact([Update("Patient", pid, changed, if_match='W/"1"')], ctx)[0]
    assert updated.status == 200 and updated.stored is not None and updated.stored.version_id == 2
    assert store.read("Patient", pid).resource()["gender"] == "female"
    assert store.vread("Patient", pid, 1).resource()["gender"] == "male"

    entries, more = store.history("Patient", pid)
    assert [e[0].version_id for e in entries] == [2, 1] and not more


def test_identical_update_creates_no_new_version(store: FhirStore, ctx: RequestContext) -> None:
    pid = store.transact([Create(patient("BN2"))], ctx)[0].stored.id  # type: ignore[union-attr]
    again = store.transact([Update("Patient", pid, patient("BN2"))], ctx)[0]
    assert again.stored is not None and again.stored.version_id == 1 and again.message == "unchanged"


def test_if_match_mismatch_is_412_and_writes_nothing(store: FhirStore, ctx: RequestContext) -> None:
    pid = store.transact([Create(patient("BN3"))], ctx)[0].stored.id  # type: ignore[union-attr]
    with pytest.raises(PreconditionFailed):
        store.transact([Update("Patient", pid, patient("BN3", gender="female"), if_match='W/"7"')], ctx)
    assert store.read("Patient", pid).version_id == 1


def test_delete_then_read_is_gone_and_identifier_is_released(store: FhirStore, ctx: RequestContext) -> None:
    pid = store.transact([Create(patient("BN4"))], ctx)[0].stored.id  # type: ignore[union-attr]
    store.transact([Delete("Patient", pid)], ctx)
    with pytest.raises(Gone):
        store.read("Patient", pid)
    with pytest.raises(NotFound):
        store.read("Patient", "does-not-exist")
    again = store.transact([Create(patient("BN4"))], ctx)[0]
    assert again.status == 201 and again.stored is not None and again.stored.id != pid


def test_duplicate_identifier_on_plain_create_is_a_conflict(store: FhirStore, ctx: RequestContext) -> None:
    store.transact([Create(patient("BN5"))], ctx)
    with pytest.raises(VersionConflict) as info:
        store.transact([Create(patient("BN5"))], ctx)
    assert info.value.location == "Patient.identifier"


def test_concurrent_conditional_creates_make_exactly_one_patient(
    store: FhirStore, ctx: RequestContext
) -> None:
    criteria = f"identifier={MRN}|BN-RACE"

    def attempt(_: int) -> int:
        return store.transact([Create(patient("BN-RACE"), if_none_exist=criteria)], ctx)[0].status

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(attempt, range(20)))
    assert statuses.count(201) == 1 and statuses.count(200) == 19
    page = store.search(parse_query("Patient", [("identifier", f"{MRN}|BN-RACE")]))
    assert len(page.matches) == 1


def test_transaction_is_atomic(store: FhirStore, ctx: RequestContext) -> None:
    bad = encounter("urn:uuid:missing", "V1")
    with pytest.raises(InvalidInput):
        store.transact([Create(patient("BN6"), full_url="urn:uuid:p"), Create(bad)], ctx)
    assert store.search(parse_query("Patient", [("identifier", f"{MRN}|BN6")])).matches == []


def test_urn_uuid_references_resolve_to_conditional_targets(store: FhirStore, ctx: RequestContext) -> None:
    existing = store.transact([Create(patient("BN7"))], ctx)[0].stored.id  # type: ignore[union-attr]
    results = store.transact(
        [
            ConditionalUpdate("Patient", f"identifier={MRN}|BN7", patient("BN7"), full_url="urn:uuid:abc"),
            Create(encounter("urn:uuid:abc", "V7")),
        ],
        ctx,
    )
    assert results[1].stored is not None
    assert results[1].stored.resource()["subject"]["reference"] == f"Patient/{existing}"


def test_conditional_update_with_several_matches_is_refused(store: FhirStore, ctx: RequestContext) -> None:
    store.transact([Create(patient("BN8", gender="other")), Create(patient("BN9", gender="other"))], ctx)
    with pytest.raises(MultipleMatches):
        store.transact([ConditionalUpdate("Patient", "gender=other", patient("BN10"))], ctx)


def test_merge_links_patients_and_repoints_encounters(store: FhirStore, ctx: RequestContext) -> None:
    results = store.transact([Create(patient("KEEP")), Create(patient("DUP", gender="male"))], ctx)
    keep, dup = (r.stored.id for r in results)  # type: ignore[union-attr]
    store.transact([Create(encounter(f"Patient/{dup}", "V-DUP"))], ctx)
    store.transact([MergePatients((MRN, "DUP"), (MRN, "KEEP"))], ctx)

    survivor = store.read("Patient", keep).resource()
    retired = store.read("Patient", dup).resource()
    assert {"other": {"reference": f"Patient/{dup}"}, "type": "replaces"} in survivor["link"]
    assert retired["active"] is False
    assert retired["link"] == [{"other": {"reference": f"Patient/{keep}"}, "type": "replaced-by"}]
    everything = store.everything(keep)
    assert [r.resource_type for r in everything] == ["Patient", "Encounter"]


def test_merge_of_unknown_duplicate_records_the_retired_identifier(
    store: FhirStore, ctx: RequestContext
) -> None:
    keep = store.transact([Create(patient("KEEP2"))], ctx)[0].stored.id  # type: ignore[union-attr]
    store.transact([MergePatients((MRN, "GHOST"), (MRN, "KEEP2"))], ctx)
    ghost = store.search(parse_query("Patient", [("identifier", f"{MRN}|GHOST")])).matches
    assert len(ghost) == 1 and ghost[0].resource()["link"][0]["other"]["reference"] == f"Patient/{keep}"


def test_validation_names_the_element(store: FhirStore, ctx: RequestContext) -> None:
    with pytest.raises(InvalidInput) as info:
        store.transact([Create(patient("BN11", birthDate="1985-13-45"))], ctx)
    assert info.value.location == "Patient.birthDate"
    with pytest.raises(InvalidInput) as info:
        store.transact([Create(patient("BN12", colour="blue"))], ctx)
    assert info.value.location == "Patient.colour"
    with pytest.raises(InvalidInput) as info:
        store.transact([Create(patient("BN13", gender="robot"))], ctx)
    assert info.value.location == "Patient.gender"


def test_security_label_change_is_a_new_version(store: FhirStore, ctx: RequestContext) -> None:
    pid = store.transact([Create(patient("BN-LABEL"))], ctx)[0].stored.id  # type: ignore[union-attr]
    labelled = patient(
        "BN-LABEL",
        meta={
            "security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]
        },
    )
    result = store.transact([Update("Patient", pid, labelled)], ctx)[0]
    assert result.stored is not None and result.stored.version_id == 2
    assert store.read("Patient", pid).resource()["meta"]["security"][0]["code"] == "R"
