"""Only the facility's record number (PID-3 type MR, else PI) is the Patient upsert key (issue #15 item 4)."""

from __future__ import annotations

import pytest

from common import RequiredFieldMissing, identifier_type_system, mrn_system
from mappers.hl7_message import parse_message, patient_key
from mappers.router import map_message

MSH = "MSH|^~\\&|HIS_VN|BVDK_HN|FHIRGATE|CRM_CSKH|20261124081500+0700||ADT^A04^ADT_A01|K1|P|2.5.1|||||VNM|UNICODE UTF-8"


def _a04(pid3: str) -> bytes:
    return (
        f"{MSH}\rEVN|A04|20261124081500+0700\rPID|1||{pid3}||Lê^Thu^Thị^^^^L||19900704|F\r"
        "PV1|1|O|KHAM^P101^01^BVDK_HN\r"
    ).encode()


def _patient_url(raw: bytes) -> str:
    entry = map_message(parse_message(raw)).bundle["entry"][0]
    assert entry["resource"]["resourceType"] == "Patient"
    return str(entry["request"]["url"])


def test_cccd_first_still_keys_by_the_record_number() -> None:
    raw = _a04("079190008888^^^BCA^NI~BN300001^^^BVDK_HN^MR")
    assert _patient_url(raw) == f"Patient?identifier={mrn_system('BVDK_HN')}|BN300001"
    assert patient_key(parse_message(raw)) == "BVDK_HN|BN300001"


def test_pi_is_the_key_when_there_is_no_mr() -> None:
    raw = _a04("B1234567^^^VNM^PPN~079190008888^^^BCA^NI~HS-000042^^^BVDK_HN^PI")
    assert _patient_url(raw) == f"Patient?identifier={identifier_type_system('BVDK_HN')}|HS-000042"


def test_only_person_level_numbers_is_refused() -> None:
    raw = _a04("079190008888^^^BCA^NI~DN4797912345678^^^BHXH^HC")
    with pytest.raises(RequiredFieldMissing, match="no record number"):
        map_message(parse_message(raw))
    assert patient_key(parse_message(raw)) is None
