"""ACK building: fast builder vs hl7apy builder, delimiters, charsets, enhanced mode."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import hl7
import pytest

from common.errors import CarebridgeError, InvalidInput, UnparseableMessage, UnsupportedVersion
from mappers.ack import acks_to_send, build_ack, build_ack_hl7apy, build_fallback_ack, error_location
from mappers.hl7_message import parse_message
from tests.mappers.helpers import GOOD, raw

NOW = datetime(2026, 11, 20, 8, 30, 5, tzinfo=timezone(timedelta(hours=7)))


def _fields(ack: bytes, codec: str = "utf-8") -> dict[str, str]:
    parsed = hl7.parse(ack.decode(codec))
    out = {}
    for seg in parsed:
        out[str(seg[0])] = str(seg)
    return out


def test_aa_ack_swaps_sender_and_receiver() -> None:
    header = parse_message(raw("adt_a04_register_outpatient.hl7")).header
    ack = build_ack(header, ack_code="AA", control_id="ACK0001", now=NOW)
    assert b"\n" not in ack
    msh, msa = ack.decode().split("\r")
    assert msh == (
        "MSH|^~\\&|FHIRGATE|CRM_CSKH|HIS_VN|BVDK_HN|20261120083005+0700||ACK^A04^ACK|ACK0001|P|2.5||||||UNICODE UTF-8"
    )
    assert msa == "MSA|AA|HIS000001"


def test_ae_ack_with_err_segment() -> None:
    header = parse_message(raw("bad_invalid_birthdate.hl7")).header
    error = InvalidInput("impossible date: '19851345'", location="PID-7")
    ack = build_ack(header, ack_code=error.hl7_ack, error=error, control_id="A1", now=NOW).decode()
    parsed = hl7.parse(ack)
    assert str(parsed.segment("MSA")) == "MSA|AE|HIS009002"
    err = parsed.segment("ERR")
    assert str(err[2]) == "PID^1^7"
    assert str(err[3]) == "102^Data type error^HL70357"
    assert str(err[4]) == "E"
    assert str(err[8]) == "impossible date: '19851345'"


@pytest.mark.parametrize(
    ("location", "erl"),
    [
        ("PID-7", ["PID", "1", "7"]),
        ("PID-3.1", ["PID", "1", "3", "1", "1"]),
        ("PID-3[2].4", ["PID", "1", "3", "2", "4"]),
        ("MSH-9.2", ["MSH", "1", "9", "1", "2"]),
        ("MSH", ["MSH", "1"]),
        (None, []),
        ("Patient.birthDate", []),
    ],
)
def test_error_location(location: str | None, erl: list[str]) -> None:
    assert error_location(location) == erl


def test_text_is_escaped_with_inbound_delimiters_and_charset() -> None:
    data = "MSH#*@!%#A#F#G#C#20261120##ADT*A04#C1#P#2.5#####VNM#8859/1\rPID#1##X1".encode("latin-1")
    header = parse_message(data).header
    error = InvalidInput("bad #*@!% value Lê", location="PID-7")
    ack = build_ack(header, ack_code="AE", error=error, control_id="A1", now=NOW)
    text = ack.decode("latin-1")
    assert text.startswith("MSH#*@!%#G#C#A#F#")
    assert "bad !F!!S!!R!!E!!T! value Lê" in text
    assert "\rERR##PID*1*7#102*Data type error*HL70357#E####bad" in text
    assert ack.count(b"\xea") == 1  # ê encoded as ISO-8859-1


def test_v23_ack_uses_err1_and_msa3() -> None:
    header = parse_message(raw("adt_a04_latin1_charset.hl7")).header
    error = InvalidInput("bad date", location="PID-7")
    segs = (
        build_ack(header, ack_code="AE", error=error, control_id="A1", now=NOW).decode("latin-1").split("\r")
    )
    assert segs[1] == "MSA|AE|OLD00001|bad date"
    assert segs[2] == "ERR|PID^1^7^102&Data type error&HL70357"


@pytest.mark.parametrize("name", [*GOOD, "bad_invalid_birthdate.hl7"])
@pytest.mark.parametrize(
    "error",
    [
        None,
        InvalidInput("impossible date: '19851345' | ^ & ~ \\ Lê", location="PID-7"),
        UnsupportedVersion("no", location="MSH-12"),
    ],
)
def test_fast_and_hl7apy_builders_agree(name: str, error: CarebridgeError | None) -> None:
    msg = parse_message(raw(name))
    code = error.hl7_ack if error else "AA"
    fast = build_ack(msg.header, ack_code=code, error=error, control_id="ACK9", now=NOW)
    slow = build_ack_hl7apy(msg.header, ack_code=code, error=error, control_id="ACK9", now=NOW)
    a, b = _fields(fast, msg.codec), _fields(slow, msg.codec)
    assert a["MSA"] == b["MSA"]
    assert a.get("ERR") == b.get("ERR")
    assert a["MSH"] == b["MSH"]


def test_fallback_ack_without_msh() -> None:
    error = UnparseableMessage("message does not start with an MSH segment", location="MSH")
    ack = build_fallback_ack(raw("bad_no_msh.hl7"), error, control_id="F1", now=NOW).decode()
    parsed = hl7.parse(ack)
    assert str(parsed.segment("MSA")) == "MSA|AR|"
    assert str(parsed.segment("ERR")[3]) == "100^Segment sequence error^HL70357"


def test_fallback_ack_with_readable_msh_echoes_control_id() -> None:
    data = b"MSH|^~\\&|A|B|C|D|2026||ADT^A04|XYZ|P|2.2"
    with pytest.raises(UnsupportedVersion) as info:
        parse_message(data)
    ack = build_fallback_ack(data, info.value, control_id="F2", now=NOW).decode()
    assert "\rMSA|AR|XYZ|HL7 version 2.2 is not supported\r" in ack
    assert "203&Unsupported version id&HL70357" in ack


def test_commit_acks_and_enhanced_mode() -> None:
    header = parse_message(raw("adt_a04_register_outpatient.hl7")).header  # MSH-15 AL, MSH-16 NE
    assert acks_to_send(header, success=True) == (True, False)
    ca = build_ack(header, ack_code="CA", control_id="C1", now=NOW).decode()
    assert "\rMSA|CA|HIS000001" in ca
    original = parse_message(b"MSH|^~\\&|A|B|C|D|2026||ADT^A04|1|P|2.5").header
    assert acks_to_send(original, success=False) == (False, True)
    with pytest.raises(ValueError):
        build_ack(header, ack_code="XX", control_id="C1")
