"""A shared CCCD/BHYT over HL7 tags both Patients instead of refusing; REST keeps its 409 (issue #15 item 4)."""

from __future__ import annotations

from typing import Any

import pytest

from common import CCCD_SYSTEM, PATIENT_STATUS_SYSTEM, VersionConflict, is_possible_duplicate
from fhir_store.model import ConditionalUpdate, Create, MergePatients, Operation, RequestContext, Update
from fhir_store.repository import FhirStore
from fhir_store.search import parse_query
from fhir_store.write_path import WriteUnit
from tests.fhir_store.conftest import MRN, encounter, patient

HL7 = RequestContext("hl7-1", client_id="HIS_VN", role="his_integration", channel="hl7")
REST = RequestContext("rest-1", client_id="his-a", role="his_integration", channel="rest")
TAG = f"{PATIENT_STATUS_SYSTEM}|possible-duplicate"


def _registration(mrn: str, cccd: str, given: list[str]) -> dict[str, Any]:
    """What mappers.patient writes for PID-3 ``<mrn>^^^BVDK_HN^MR~<cccd>^^^BCA^NI``."""
    return patient(
        mrn,
        identifier=[
            {"system": MRN, "value": mrn, "type": {"coding": [{"code": "MR"}]}},
            {
                "system": CCCD_SYSTEM,
                "value": cccd,
                "type": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "NI"}]
                },
            },
        ],
        name=[{"family": "Trần", "given": given, "text": " ".join(["Trần", *given])}],
    )


def _upsert(mrn: str, cccd: str, given: list[str]) -> ConditionalUpdate:
    return ConditionalUpdate("Patient", f"identifier={MRN}|{mrn}", _registration(mrn, cccd, given))


def _current(store: FhirStore, patient_id: str) -> dict[str, Any]:
    return store.read("Patient", patient_id).resource()


def _tagged(store: FhirStore) -> set[str]:
    return {m.id for m in store.search(parse_query("Patient", [("_tag", TAG)])).matches}


def test_hl7_second_record_number_with_the_same_cccd_is_stored_and_both_are_tagged(store: FhirStore) -> None:
    first = store.transact([_upsert("BN200001", "079190004321", ["Thị", "Mai"])], HL7)[0].stored
    assert first is not None and not is_possible_duplicate(first.resource())
    second = store.transact([_upsert("BN200002", "079190004321", ["Thị", "Mai"])], HL7)[0].stored
    assert second is not None and second.id != first.id
    assert is_possible_duplicate(_current(store, first.id)) and is_possible_duplicate(second.resource())
    assert _tagged(store) == {first.id, second.id}
    # the CCCD finds both registrations
    both = store.search(parse_query("Patient", [("identifier", f"{CCCD_SYSTEM}|079190004321")])).matches
    assert {m.id for m in both} == {first.id, second.id}

    # a later HL7 update of either keeps the tag (the mapper never sends meta) and is not refused
    again = store.transact([_upsert("BN200002", "079190004321", ["Thị", "Mai", "Hoa"])], HL7)[0].stored
    assert again is not None and again.version_id == 2 and is_possible_duplicate(again.resource())


def test_rest_keeps_its_409_without_naming_the_owner_and_can_clear_the_tag(store: FhirStore) -> None:
    first = store.transact([_upsert("BN200011", "079190005555", ["Văn", "Hùng"])], HL7)[0].stored
    assert first is not None
    with pytest.raises(VersionConflict) as refused:
        store.transact([Create(_registration("BN200012", "079190005555", ["Văn", "Hùng"]))], REST)
    assert first.id not in str(refused.value) and "another Patient" in str(refused.value)
    assert _tagged(store) == set()

    second = store.transact([_upsert("BN200012", "079190005555", ["Văn", "Hùng"])], HL7)[0].stored
    assert second is not None and _tagged(store) == {first.id, second.id}
    # an operator decides they are two people: an update without the tag clears it, CCCD kept
    body = {k: v for k, v in second.resource().items() if k != "meta"}
    cleared = store.transact([Update("Patient", second.id, body)], REST)[0].stored
    assert cleared is not None and not is_possible_duplicate(cleared.resource())
    assert _tagged(store) == {first.id}


def test_a_merge_of_the_two_clears_the_tag_and_the_survivor_keeps_the_visit(store: FhirStore) -> None:
    first = store.transact([_upsert("BN200021", "079190006666", ["Thị", "Lan"])], HL7)[0].stored
    assert first is not None
    registration = _upsert("BN200022", "079190006666", ["Thị", "Lan"])
    registration.full_url = "urn:uuid:p"
    bundle: list[Operation] = [registration, Create(encounter("urn:uuid:p", "V200022"))]
    results = store.transact(bundle, HL7)
    second, visit = results[0].stored, results[1].stored
    assert second is not None and visit is not None
    assert visit.resource()["subject"] == {"reference": f"Patient/{second.id}"}

    store.transact([MergePatients((MRN, "BN200022"), (MRN, "BN200021"))], HL7)
    survivor, retired = _current(store, first.id), _current(store, second.id)
    assert not is_possible_duplicate(survivor) and not is_possible_duplicate(retired)
    assert retired["active"] is False and _tagged(store) == set()
    moved = store.read("Encounter", visit.id).resource()
    assert moved["subject"] == {"reference": f"Patient/{first.id}"}


def test_a_group_commit_tags_a_duplicate_registered_earlier_in_the_same_group(store: FhirStore) -> None:
    units = [
        WriteUnit([_upsert("BN200031", "079190007777", ["Minh", "Tuấn"])], HL7),
        WriteUnit([_upsert("BN200032", "079190007777", ["Minh", "Tuấn"])], HL7),
    ]
    out = store.transact_group(units)
    ids = {r[0].stored.id for r in out if r[0].stored is not None}
    assert len(ids) == 2 and _tagged(store) == ids
