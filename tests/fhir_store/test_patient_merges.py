"""Merges in the store (issue #15 item 5): several pairs at once, retired numbers, links kept, unlink.

FHIR R5 ``Patient/$merge`` result (source inactive, ``replaced-by``; target
``replaces``) applied by the HL7 channel; the store follows ``replaced-by``
when a conditional write names a retired record number.
"""

from __future__ import annotations

from typing import Any

from fhir_store.model import ConditionalUpdate, Create, MergePatients, RequestContext, UnlinkPatients
from fhir_store.repository import FhirStore
from fhir_store.writer import find_identifier_owner
from tests.fhir_store.conftest import MRN, encounter, patient

HL7 = RequestContext("hl7-merge", client_id="HIS_VN", role="his_integration", channel="hl7")


def _pid(mrn: str, given: list[str], phone: str = "0903111222") -> dict[str, Any]:
    """What mappers.patient writes for PID-3 ``<mrn>^^^BVDK_HN^MR`` and a full PID."""
    return patient(
        mrn,
        active=True,
        name=[{"family": "Lê", "given": given, "text": " ".join(["Lê", *given])}],
        telecom=[{"system": "phone", "value": phone, "use": "mobile"}],
    )


def _upsert(mrn: str, given: list[str], phone: str = "0903111222") -> ConditionalUpdate:
    return ConditionalUpdate("Patient", f"identifier={MRN}|{mrn}", _pid(mrn, given, phone))


def _owner(store: FhirStore, mrn: str) -> dict[str, Any]:
    with store.engine.connect() as conn:
        found = find_identifier_owner(conn, "Patient", MRN, store.cipher.blind(mrn))
    assert found is not None, mrn
    return store.read("Patient", found).resource()


def _links(resource: dict[str, Any]) -> set[tuple[str, str]]:
    return {(lk["type"], lk["other"]["reference"]) for lk in resource.get("link", [])}


def _merge(retired: str, survivor: str) -> MergePatients:
    return MergePatients((MRN, retired), (MRN, survivor))


def test_two_pairs_merge_in_one_transaction_and_later_messages_go_to_the_survivor(store: FhirStore) -> None:
    for mrn in ("BN400001", "BN400002", "BN400003"):
        store.transact([_upsert(mrn, ["Thị", "Thu"])], HL7)
    visit = store.transact([Create(encounter(f"Patient/{_owner(store, 'BN400003')['id']}", "V400003"))], HL7)[
        0
    ].stored
    assert visit is not None

    store.transact([_merge("BN400002", "BN400001"), _merge("BN400003", "BN400001")], HL7)
    thu, second, third = (_owner(store, m) for m in ("BN400001", "BN400002", "BN400003"))
    ref = f"Patient/{thu['id']}"
    assert _links(thu) == {("replaces", f"Patient/{second['id']}"), ("replaces", f"Patient/{third['id']}")}
    for merged in (second, third):
        assert merged["active"] is False and _links(merged) == {("replaced-by", ref)}
    assert store.read("Encounter", visit.id).resource()["subject"] == {"reference": ref}

    # an A08 quoting the retired number: the survivor is updated, the merged record stays merged
    store.transact([_upsert("BN400002", ["Thị", "Thu"], phone="0987654321")], HL7)
    after, merged = _owner(store, "BN400001"), _owner(store, "BN400002")
    assert merged == second  # not revived, not even a new version
    assert after["telecom"][0]["value"] == "+84987654321"
    assert {i["value"] for i in after["identifier"]} == {"BN400001"}  # the retired number stays retired
    assert _links(after) == _links(thu)

    # an A04 restating the survivor keeps its `replaces` links
    store.transact([_upsert("BN400001", ["Thị", "Thu"], phone="0911222333")], HL7)
    assert _links(_owner(store, "BN400001")) == _links(thu)

    # a conditional create for a retired number finds the survivor (no new record)
    created = store.transact(
        [Create(_pid("BN400003", ["Thị", "Thu"]), if_none_exist=f"identifier={MRN}|BN400003")], HL7
    )[0]
    assert created.stored is not None and created.stored.id == thu["id"]


def test_a_chain_of_merges_is_followed_and_a_cycle_stops(store: FhirStore) -> None:
    for mrn in ("BN410001", "BN410002", "BN410003"):
        store.transact([_upsert(mrn, ["Văn", "Hùng"])], HL7)
    store.transact([_merge("BN410001", "BN410002")], HL7)
    store.transact([_merge("BN410002", "BN410003")], HL7)
    store.transact([_upsert("BN410001", ["Văn", "Hùng"], phone="0977000111")], HL7)
    assert _owner(store, "BN410003")["telecom"][0]["value"] == "+84977000111"
    assert _owner(store, "BN410001")["active"] is False


def test_unlink_removes_the_pair_and_reactivates_the_merged_record(store: FhirStore) -> None:
    for mrn in ("BN420001", "BN420002"):
        store.transact([_upsert(mrn, ["Thị", "Lan"])], HL7)
    store.transact([_merge("BN420002", "BN420001")], HL7)
    store.transact([UnlinkPatients((MRN, "BN420001"), (MRN, "BN420002"))], HL7)
    survivor, other = _owner(store, "BN420001"), _owner(store, "BN420002")
    assert "link" not in survivor and "link" not in other
    assert other["active"] is True
    # once unlinked, the number is the other record's own again
    store.transact([_upsert("BN420002", ["Thị", "Lan"], phone="0966555444")], HL7)
    assert _owner(store, "BN420002")["telecom"][0]["value"] == "+84966555444"
    assert _owner(store, "BN420001")["telecom"][0]["value"] == "+84903111222"
