"""HL7 data type conversions (DTM, XPN, CX, XTN, XAD, XCN)."""

from __future__ import annotations

import pytest
from fhir.resources.R4B.address import Address
from fhir.resources.R4B.contactpoint import ContactPoint
from fhir.resources.R4B.humanname import HumanName
from fhir.resources.R4B.identifier import Identifier

from common.errors import InvalidInput
from common.identifiers import BHYT_SYSTEM, CCCD_SYSTEM, identifier_type_system, mrn_system
from mappers.datatypes import (
    ORIGINAL_TEXT_URL,
    add_minutes,
    cx_to_identifier,
    fhir_to_dtm,
    normalize_phone,
    ts_to_date,
    ts_to_datetime,
    ts_to_instant,
    xad_to_address,
    xcn_to_reference,
    xpn_to_human_name,
    xtn_to_contact_point,
)
from mappers.hl7_encoding import EncodingChars
from mappers.hl7_message import Repetition

ENC = EncodingChars("|", "^", "~", "\\", "&")


def rep(text: str) -> Repetition:
    return Repetition(text, ENC, "utf-8")


@pytest.mark.parametrize(
    ("value", "date", "datetime_"),
    [
        ("1985", "1985", "1985"),
        ("198503", "1985-03", "1985-03"),
        ("19850312", "1985-03-12", "1985-03-12"),
        ("1985031208", "1985-03-12", "1985-03-12T08:00:00+07:00"),
        ("20261120083000+0700", "2026-11-20", "2026-11-20T08:30:00+07:00"),
        ("20261120083000.123+0000", "2026-11-20", "2026-11-20T08:30:00.123+00:00"),
        ("202611200830-0530", "2026-11-20", "2026-11-20T08:30:00-05:30"),
        ("20240229", "2024-02-29", "2024-02-29"),
    ],
)
def test_dtm(value: str, date: str, datetime_: str) -> None:
    assert ts_to_date(value, location="X-1") == date
    assert ts_to_datetime(value, location="X-1") == datetime_


@pytest.mark.parametrize(
    "value", ["19851345", "19850230", "20230229", "1985031225", "198503120861", "abc", "85"]
)
def test_impossible_dates(value: str) -> None:
    with pytest.raises(InvalidInput) as info:
        ts_to_datetime(value, location="PID-7")
    assert info.value.location == "PID-7"


def test_instant_and_arithmetic() -> None:
    start = ts_to_instant("202611250900+0700", location="SCH-11")
    assert start == "2026-11-25T09:00:00+07:00"
    assert add_minutes(start, 30) == "2026-11-25T09:30:00+07:00"
    assert add_minutes("2026-11-25T23:45:00+07:00", 30) == "2026-11-26T00:15:00+07:00"
    assert ts_to_instant("", location="SCH-11") is None
    with pytest.raises(InvalidInput):
        ts_to_instant("2026", location="SCH-11")
    assert fhir_to_dtm("2026-11-25T09:00:00+07:00") == "20261125090000+0700"
    assert fhir_to_dtm("1985-03-12") == "19850312"


def test_xpn_vietnamese_order() -> None:
    name = xpn_to_human_name(rep("Nguyễn^An^Văn^^^^L"))
    assert name == {"use": "official", "text": "Nguyễn Văn An", "family": "Nguyễn", "given": ["Văn", "An"]}
    HumanName.model_validate(name)


def test_xpn_whole_name_and_upper_case_kept_as_sent() -> None:
    assert xpn_to_human_name(rep("NGUYEN VAN AN")) == {"text": "NGUYEN VAN AN"}
    assert xpn_to_human_name(rep("Nguyễn Văn An")) == {"text": "Nguyễn Văn An"}
    upper = xpn_to_human_name(rep("NGUYEN^AN^VAN"))
    assert upper == {"text": "NGUYEN VAN AN", "family": "NGUYEN", "given": ["VAN", "AN"]}
    assert xpn_to_human_name(rep("")) is None


def test_cx_systems_and_types() -> None:
    mr = cx_to_identifier(rep("BN1^^^BVDK_HN^MR"), default_authority="X")
    assert mr is not None and mr["system"] == mrn_system("BVDK_HN")
    ni = cx_to_identifier(rep("079085001234^^^BCA^NI"), default_authority="X")
    assert ni is not None and ni["system"] == CCCD_SYSTEM and "assigner" not in ni
    hc = cx_to_identifier(rep("DN4797912345678^^^BHXH^HC"), default_authority="X")
    assert hc is not None and hc["system"] == BHYT_SYSTEM
    pi = cx_to_identifier(rep("P9^^^H2^PI"), default_authority="X")
    assert pi is not None and pi["system"] == identifier_type_system("H2")
    no_authority = cx_to_identifier(rep("BN2^^^^MR"), default_authority="FAC")
    assert no_authority is not None and no_authority["system"] == mrn_system("FAC")
    assert cx_to_identifier(rep("^^^BCA^NI"), default_authority="X") is None
    for ident in (mr, ni, hc, pi):
        Identifier.model_validate(ident)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("0912345678", "+84912345678"),
        ("+84 912 345 678", "+84912345678"),
        ("+84 (0) 912 345 678", "+84912345678"),
        ("+840912345678", "+84912345678"),
        ("0084912345678", "+84912345678"),
        ("84912345678", "+84912345678"),
        ("024 3826 4567", "+842438264567"),
        ("091.234.5678", "+84912345678"),
        ("12345", None),
        ("call me", None),
    ],
)
def test_phone_normalisation(raw: str, e164: str | None) -> None:
    assert normalize_phone(raw) == e164


def test_xtn() -> None:
    mobile = xtn_to_contact_point(rep("0912345678^PRN^CP"))
    assert mobile == {
        "system": "phone",
        "value": "+84912345678",
        "extension": [{"url": ORIGINAL_TEXT_URL, "valueString": "0912345678"}],
        "use": "mobile",
    }
    work = xtn_to_contact_point(rep("+84243826456^WPN^PH"))
    assert work == {"system": "phone", "value": "+84243826456", "use": "work"}
    fax = xtn_to_contact_point(rep("02438264567^WPN^FX"))
    assert fax is not None and fax["system"] == "fax"
    email = xtn_to_contact_point(rep("^NET^Internet^an@example.vn"))
    assert email == {"system": "email", "value": "an@example.vn"}
    odd = xtn_to_contact_point(rep("ext 12^PRN^PH"))
    assert odd == {"system": "phone", "value": "ext 12", "use": "home"}
    parts = xtn_to_contact_point(rep("^PRN^PH^^84^28^38221234"))
    assert parts is not None and parts["value"] == "+842838221234"
    assert xtn_to_contact_point(rep("^PRN^PH")) is None
    for cp in (mobile, work, fax, email, odd, parts):
        ContactPoint.model_validate(cp)


def test_xad_two_and_three_levels() -> None:
    two = xad_to_address(rep("12 Lý Thường Kiệt^^Phường Hoàn Kiếm^Hà Nội^100000^VNM^H"))
    assert two is not None
    assert two["text"] == "12 Lý Thường Kiệt, Phường Hoàn Kiếm, Hà Nội"
    assert (two["city"], two["state"], two["use"]) == ("Phường Hoàn Kiếm", "Hà Nội", "home")
    three = xad_to_address(rep("5 Hàng Bài^Phường Tràng Tiền^Hoàn Kiếm^Hà Nội^^VNM^H^^Quận Hoàn Kiếm"))
    assert three is not None
    assert three["line"] == ["5 Hàng Bài", "Phường Tràng Tiền"]
    assert three["district"] == "Quận Hoàn Kiếm"
    assert three["text"] == "5 Hàng Bài, Phường Tràng Tiền, Quận Hoàn Kiếm, Hoàn Kiếm, Hà Nội"
    assert xad_to_address(rep("")) is None
    for a in (two, three):
        Address.model_validate(a)


def test_xcn_reference() -> None:
    ref = xcn_to_reference(rep("BS014^Đỗ^Hùng^Quốc^^^BS"), default_authority="BVDK_HN")
    assert ref is not None
    assert ref["display"] == "Đỗ Quốc Hùng"
    assert ref["identifier"]["value"] == "BS014"
    assert xcn_to_reference(rep(""), default_authority="X") is None
