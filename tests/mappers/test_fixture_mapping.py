"""Every sample in tests/fixtures/hl7v2 maps (or is refused) with real content checked."""

from __future__ import annotations

import pytest

from common.errors import (
    CarebridgeError,
    InvalidInput,
    RequiredFieldMissing,
    UnparseableMessage,
    UnsupportedMessageType,
)
from common.identifiers import BHYT_SYSTEM, CCCD_SYSTEM, mrn_system, practitioner_system, visit_system
from mappers.datatypes import ORIGINAL_TEXT_URL
from mappers.hl7_message import parse_message
from mappers.router import map_message
from tests.mappers.helpers import BAD, GOOD, entries, map_fixture, raw, resources, validate_bundle

MRN_BV = mrn_system("BVDK_HN")
MRN_NK = mrn_system("NK_SMILE_Q1")


@pytest.mark.parametrize("name", GOOD)
def test_every_good_sample_maps_and_validates(name: str) -> None:
    result = map_fixture(name)
    validate_bundle(result.bundle)
    assert result.patient_key
    assert result.event.split("^")[0] in ("ADT", "SIU")


def test_a04_patient_full_content() -> None:
    result = map_fixture("adt_a04_register_outpatient.hl7")
    assert result.event == "ADT^A04"
    assert result.patient_key == "BVDK_HN|BN000123"
    [entry] = entries(result, "Patient")
    assert entry["request"] == {"method": "PUT", "url": f"Patient?identifier={MRN_BV}|BN000123"}
    patient = entry["resource"]
    name = patient["name"][0]
    assert name["family"] == "Nguyễn"
    assert name["given"] == ["Văn", "An"]
    assert name["text"] == "Nguyễn Văn An"
    assert name["use"] == "official"
    by_system = {i["system"]: i for i in patient["identifier"]}
    assert by_system[MRN_BV]["value"] == "BN000123"
    assert by_system[MRN_BV]["type"]["coding"][0]["code"] == "MR"
    assert by_system[CCCD_SYSTEM]["value"] == "079085001234"
    assert by_system[CCCD_SYSTEM]["type"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v2-0203",
        "code": "NI",
    }
    assert by_system[BHYT_SYSTEM]["value"] == "DN4797912345678"
    assert by_system[BHYT_SYSTEM]["type"]["coding"][0]["code"] == "HC"
    phone, email = patient["telecom"]
    assert phone["system"] == "phone" and phone["value"] == "+84912345678" and phone["use"] == "mobile"
    assert phone["extension"] == [{"url": ORIGINAL_TEXT_URL, "valueString": "0912345678"}]
    assert email == {"system": "email", "value": "an.nguyen@example.vn"}
    assert patient["birthDate"] == "1985-03-12"
    assert patient["gender"] == "male"
    address = patient["address"][0]
    assert address["line"] == ["12 Lý Thường Kiệt"]
    assert address["city"] == "Phường Hoàn Kiếm"
    assert address["state"] == "Hà Nội"
    assert address["postalCode"] == "100000"
    assert address["country"] == "VNM"
    assert address["use"] == "home"
    assert address["text"] == "12 Lý Thường Kiệt, Phường Hoàn Kiếm, Hà Nội"
    assert patient["maritalStatus"]["coding"][0]["code"] == "M"
    contact = patient["contact"][0]
    assert contact["name"]["text"] == "Nguyễn Thị Lan"
    assert contact["telecom"][0]["value"] == "+84987654321"


def test_a04_encounter() -> None:
    result = map_fixture("adt_a04_register_outpatient.hl7")
    [entry] = entries(result, "Encounter")
    patient_url = entries(result, "Patient")[0]["fullUrl"]
    system = visit_system("BVDK_HN")
    assert entry["request"] == {"method": "PUT", "url": f"Encounter?identifier={system}|V2026112000001"}
    enc = entry["resource"]
    assert enc["status"] == "in-progress"
    assert enc["class"]["code"] == "AMB"
    assert enc["subject"] == {"reference": patient_url}
    assert enc["period"] == {"start": "2026-11-20T08:30:00+07:00"}
    assert enc["serviceType"]["coding"][0]["code"] == "NHA"
    [attender] = enc["participant"]
    assert attender["type"][0]["coding"][0]["code"] == "ATND"
    assert attender["individual"]["display"] == "Trần Thị Bình"
    assert attender["individual"]["identifier"] == {
        "system": practitioner_system("BVDK_HN"),
        "value": "BS001",
    }
    assert enc["location"][0]["location"]["display"] == "KHAM - P101 - 01"


def test_a01_inpatient_admit() -> None:
    result = map_fixture("adt_a01_admit_inpatient.hl7")
    patient = resources(result, "Patient")[0]
    assert patient["name"][0]["text"] == "Phạm Thị Minh"
    assert patient["name"][0]["given"] == ["Thị", "Minh"]
    assert patient["gender"] == "female"
    assert patient["birthDate"] == "1990-07-04"
    assert patient["address"][0]["city"] == "Phường Thanh Xuân"
    enc = resources(result, "Encounter")[0]
    assert enc["status"] == "in-progress"
    assert enc["class"]["code"] == "IMP"
    assert enc["location"][0]["location"]["display"] == "Khoa Nội"
    assert enc["participant"][0]["individual"]["display"] == "Đỗ Quốc Hùng"
    assert enc["period"]["start"] == "2026-11-21T09:15:00+07:00"


def test_a03_discharge_finishes_encounter() -> None:
    result = map_fixture("adt_a03_discharge_service_completed.hl7")
    [pat_entry] = entries(result, "Patient")
    assert pat_entry["request"]["method"] == "POST"
    assert pat_entry["request"]["ifNoneExist"] == f"identifier={MRN_BV}|BN000123"
    enc = resources(result, "Encounter")[0]
    assert enc["status"] == "finished"
    assert enc["period"] == {"start": "2026-11-20T08:30:00+07:00", "end": "2026-11-20T10:15:00+07:00"}
    assert enc["hospitalization"]["dischargeDisposition"]["coding"][0]["code"] == "01"


def test_a08_updates_patient_and_only_creates_encounter() -> None:
    result = map_fixture("adt_a08_update_patient.hl7")
    [pat] = entries(result, "Patient")
    assert pat["request"]["method"] == "PUT"
    assert pat["resource"]["telecom"][0]["value"] == "+84977888999"
    assert pat["resource"]["address"][0]["line"] == ["88 Trần Hưng Đạo"]
    [enc] = entries(result, "Encounter")
    assert enc["request"]["method"] == "POST" and "ifNoneExist" in enc["request"]


def test_a28_add_person_phone_in_international_format() -> None:
    result = map_fixture("adt_a28_add_person.hl7")
    assert [e["resource"]["resourceType"] for e in result.bundle["entry"]] == ["Patient"]
    entry = entries(result, "Patient")[0]
    assert entry["request"]["url"] == f"Patient?identifier={MRN_NK}|KH20261118-07"
    patient = entry["resource"]
    assert patient["name"][0]["text"] == "Võ Ngọc Ánh"
    phone = patient["telecom"][0]
    assert phone["value"] == "+84938555666"
    assert phone["extension"][0]["valueString"] == "+84 938 555 666"
    assert patient["telecom"][1]["value"] == "anh.vo@example.vn"
    assert patient["address"][0]["text"] == "27 Lê Lợi, Phường Sài Gòn, Hồ Chí Minh"


def test_a40_merge_parameters() -> None:
    result = map_fixture("adt_a40_merge_duplicate.hl7")
    patient_entry, merge = result.bundle["entry"]
    assert patient_entry["request"]["method"] == "POST"
    assert merge["request"] == {"method": "POST", "url": "Patient/$merge"}
    params = {p["name"]: p["valueIdentifier"] for p in merge["resource"]["parameter"]}
    assert merge["resource"]["resourceType"] == "Parameters"
    assert (params["source-patient-identifier"]["system"], params["source-patient-identifier"]["value"]) == (
        MRN_BV,
        "BN000999",
    )
    assert (params["target-patient-identifier"]["system"], params["target-patient-identifier"]["value"]) == (
        MRN_BV,
        "BN000123",
    )


def test_latin1_sample_decodes_vietnamese() -> None:
    msg = parse_message(raw("adt_a04_latin1_charset.hl7"))
    assert msg.codec == "iso8859-1"
    result = map_message(msg)
    patient = resources(result, "Patient")[0]
    assert patient["name"][0]["family"] == "Lê"
    assert patient["name"][0]["given"] == ["Hà"]
    assert patient["name"][0]["text"] == "Lê Hà"
    assert patient["identifier"][0]["system"] == mrn_system("PK_CU")
    assert patient["telecom"][0]["value"] == "+84901234567"
    # PV1 without visit number: no Encounter
    assert resources(result, "Encounter") == []


def test_siu_s12_appointment() -> None:
    result = map_fixture("siu_s12_new_appointment.hl7")
    assert result.event == "SIU^S12"
    [pat] = entries(result, "Patient")
    assert pat["request"]["method"] == "POST" and pat["request"]["ifNoneExist"].endswith("|KH20261118-07")
    [entry] = entries(result, "Appointment")
    filler = "https://id.carebridge.vn/appointment/filler/NK_SMILE_Q1"
    assert entry["request"] == {"method": "PUT", "url": f"Appointment?identifier={filler}|LH000501"}
    appt = entry["resource"]
    assert appt["status"] == "booked"
    assert appt["start"] == "2026-11-25T09:00:00+07:00"
    assert appt["end"] == "2026-11-25T09:30:00+07:00"
    assert appt["minutesDuration"] == 30
    assert appt["identifier"][1]["system"].endswith("/appointment/placer/NK_SMILE_Q1")
    assert appt["serviceType"][0]["coding"][0]["code"] == "NIENG"
    assert appt["appointmentType"]["coding"][0]["code"] == "ROUTINE"
    assert appt["reasonCode"][0]["text"] == "Tái khám niềng răng"
    patient_part, doctor, chair = appt["participant"]
    assert patient_part == {
        "actor": {"reference": pat["fullUrl"], "type": "Patient"},
        "required": "required",
        "status": "accepted",
    }
    assert doctor["actor"]["display"] == "Lý Minh Khoa"
    assert doctor["actor"]["identifier"]["value"] == "BS020"
    assert chair["actor"] == {"type": "Location", "display": "GHE02 - Ghế 2"}
    assert all(p["required"] == "required" and p["status"] == "accepted" for p in appt["participant"])


@pytest.mark.parametrize(
    ("name", "status", "start"),
    [
        ("siu_s12_new_appointment.hl7", "booked", "2026-11-25T09:00:00+07:00"),
        ("siu_s13_reschedule.hl7", "booked", "2026-11-26T14:00:00+07:00"),
        ("siu_s15_cancel.hl7", "cancelled", "2026-11-26T14:00:00+07:00"),
        ("siu_s26_noshow.hl7", "noshow", "2026-11-26T14:30:00+07:00"),
    ],
)
def test_siu_status_per_event(name: str, status: str, start: str) -> None:
    appt = resources(map_fixture(name), "Appointment")[0]
    assert appt["status"] == status
    assert appt["start"] == start


def test_sch25_overrides_event_status() -> None:
    text = raw("siu_s12_new_appointment.hl7").replace(b"|||||Booked", b"|||||Complete")
    appt = resources(map_message(parse_message(text)), "Appointment")[0]
    assert appt["status"] == "fulfilled"


@pytest.mark.parametrize(
    ("name", "error", "location"),
    [
        ("bad_invalid_birthdate.hl7", InvalidInput, "PID-7"),
        ("bad_missing_patient_id.hl7", RequiredFieldMissing, "PID-3"),
        ("bad_no_msh.hl7", UnparseableMessage, "MSH"),
        ("bad_unsupported_trigger.hl7", UnsupportedMessageType, "MSH-9"),
    ],
)
def test_bad_samples_are_refused(name: str, error: type[CarebridgeError], location: str) -> None:
    assert name in BAD
    with pytest.raises(error) as info:
        map_message(parse_message(raw(name)))
    assert type(info.value) is error
    assert info.value.location == location


def test_bad_sample_ack_codes() -> None:
    expected = {
        "bad_invalid_birthdate.hl7": ("AE", "102"),
        "bad_missing_patient_id.hl7": ("AE", "101"),
        "bad_no_msh.hl7": ("AR", "100"),
        "bad_unsupported_trigger.hl7": ("AR", "200"),
    }
    for name, (ack, code) in expected.items():
        with pytest.raises(CarebridgeError) as info:
            map_message(parse_message(raw(name)))
        assert (info.value.hl7_ack, info.value.hl7_error_code) == (ack, code)


def test_unsupported_adt_trigger_is_an_event_error() -> None:
    text = raw("adt_a04_register_outpatient.hl7").replace(b"ADT^A04^ADT_A01", b"ADT^A99^ADT_A01")
    with pytest.raises(UnsupportedMessageType) as info:
        map_message(parse_message(text))
    assert info.value.location == "MSH-9.2"
    assert info.value.hl7_error_code == "201"


def test_a03_without_visit_number_is_refused() -> None:
    text = raw("adt_a03_discharge_service_completed.hl7").replace(b"V2026112000001", b"")
    with pytest.raises(RequiredFieldMissing) as info:
        map_message(parse_message(text))
    assert info.value.location == "PV1-19"


def test_cancel_admit_and_cancel_discharge() -> None:
    a11 = raw("adt_a03_discharge_service_completed.hl7").replace(b"ADT^A03^ADT_A03", b"ADT^A11^ADT_A09")
    enc = resources(map_message(parse_message(a11)), "Encounter")[0]
    assert enc["status"] == "cancelled"
    a13 = raw("adt_a03_discharge_service_completed.hl7").replace(b"ADT^A03^ADT_A03", b"ADT^A13^ADT_A01")
    result = map_message(parse_message(a13))
    validate_bundle(result.bundle)
    enc = resources(result, "Encounter")[0]
    assert enc["status"] == "in-progress"
    assert "end" not in enc["period"]


def test_pv1_45_on_any_event_finishes() -> None:
    text = raw("adt_a04_register_outpatient.hl7").replace(
        b"|20261120083000+0700\rPV2", b"|20261120083000+0700|20261120100000+0700\rPV2"
    )
    enc = resources(map_message(parse_message(text)), "Encounter")[0]
    assert enc["status"] == "finished"
    assert enc["period"]["end"] == "2026-11-20T10:00:00+07:00"


def test_deterministic_ids_can_be_injected() -> None:
    counter = iter(range(100))
    result = map_message(
        parse_message(raw("adt_a04_register_outpatient.hl7")), new_id=lambda: f"id-{next(counter)}"
    )
    assert [e["fullUrl"] for e in result.bundle["entry"]] == ["urn:uuid:id-0", "urn:uuid:id-1"]
