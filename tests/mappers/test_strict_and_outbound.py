"""Strict (hl7apy) validation mode and the outbound SIU^S12."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import hl7
import pytest

from common.errors import InvalidInput, UnparseableMessage
from mappers.hl7_message import parse_message
from mappers.outbound_siu import appointment_to_siu_s12
from mappers.router import map_message
from mappers.strict import parse_strict, validate_strict
from tests.mappers.helpers import map_fixture, raw, resources, validate_bundle

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=timezone(timedelta(hours=7)))


@pytest.mark.parametrize(
    "name",
    [
        "adt_a01_admit_inpatient.hl7",
        "adt_a03_discharge_service_completed.hl7",
        "adt_a04_register_outpatient.hl7",
        "adt_a04_latin1_charset.hl7",
        "adt_a08_update_patient.hl7",
        "adt_a40_merge_duplicate.hl7",
    ],
)
def test_strict_accepts_conformant_samples(name: str) -> None:
    assert parse_strict(raw(name)).header.control_id


@pytest.mark.parametrize(
    ("name", "location"),
    [
        ("bad_invalid_birthdate.hl7", "PID-7"),
        ("siu_s12_new_appointment.hl7", "SCH-6"),  # SCH-6 event reason is required in v2.5.1
        ("adt_a28_add_person.hl7", "PV1"),  # ADT_A05 requires PV1
    ],
)
def test_strict_reports_location(name: str, location: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_strict(raw(name))
    assert info.value.location == location


def test_strict_keeps_tokenizer_errors() -> None:
    with pytest.raises(UnparseableMessage):
        parse_strict(raw("bad_no_msh.hl7"))


def test_outbound_siu_round_trip() -> None:
    inbound = map_fixture("siu_s12_new_appointment.hl7")
    appointment = resources(inbound, "Appointment")[0]
    patient = {"resourceType": "Patient", "identifier": resources(inbound, "Patient")[0]["identifier"]}
    out = appointment_to_siu_s12(
        appointment,
        patient,
        sending_app="CAREBRIDGE",
        sending_facility="CB",
        receiving_app="HIS_VN",
        receiving_facility="NK_SMILE_Q1",
        control_id="CB0001",
        now=NOW,
    )
    assert b"\n" not in out
    parsed = hl7.parse(out.decode("utf-8"))
    assert str(parsed.segment("MSH")[9]) == "SIU^S12^SIU_S12"
    assert str(parsed.segment("MSH")[10]) == "CB0001"
    msg = parse_message(out)
    validate_strict(msg)  # hl7apy STRICT accepts what we send
    back = map_message(msg)
    validate_bundle(back.bundle)
    again = resources(back, "Appointment")[0]
    for key in ("identifier", "start", "end", "status", "minutesDuration", "serviceType"):
        assert again[key] == appointment[key]
    assert resources(back, "Patient")[0]["identifier"][0]["value"] == "KH20261118-07"
    assert "PID|1||KH20261118-07^^^NK_SMILE_Q1^MR" in out.decode()
    assert b"Nguy" not in out and b"name" not in out  # nothing but the record number was given


def test_outbound_siu_proposed_from_crm() -> None:
    appointment = {
        "resourceType": "Appointment",
        "id": "a-1",
        "status": "proposed",
        "start": "2026-12-01T10:00:00+07:00",
        "end": "2026-12-01T10:45:00+07:00",
        "serviceType": [{"coding": [{"code": "CAORANG", "display": "Cạo vôi răng"}]}],
        "participant": [{"actor": {"reference": "Patient/p1"}, "status": "needs-action"}],
    }
    patient = {
        "identifier": [{"system": "https://id.carebridge.vn/mrn/BVDK_HN", "value": "BN000123"}],
        "name": [{"family": "Nguyễn", "given": ["Văn", "An"]}],
    }
    out = appointment_to_siu_s12(
        appointment,
        patient,
        sending_app="CAREBRIDGE",
        sending_facility="CB",
        receiving_app="HIS_VN",
        receiving_facility="BVDK_HN",
        control_id="CB0002",
        now=NOW,
    ).decode()
    assert "SCH|a-1^CB|" in out
    assert "|Pending" in out.split("\r")[1]
    assert "^^45^20261201100000+0700^20261201104500+0700" in out
    assert "PID|1||BN000123^^^BVDK_HN^MR||Nguyễn^An^Văn" in out
    assert "AIS|1|A|CAORANG^Cạo vôi răng^LOCAL|20261201100000+0700|||45|MIN" in out
