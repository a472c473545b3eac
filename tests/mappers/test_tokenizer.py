"""Edge cases of the fast tokenizer: line ends, BOM, charsets, delimiters, escapes, repetitions."""

from __future__ import annotations

import pytest

from common.errors import UnparseableMessage, UnsupportedVersion
from mappers.hl7_encoding import unescape
from mappers.hl7_message import parse_message, patient_key, peek_header
from tests.mappers.helpers import raw

A04 = raw("adt_a04_register_outpatient.hl7")


def _msg(*segments: str, msh: str | None = None) -> bytes:
    head = (
        msh
        or "MSH|^~\\&|APP|FAC|GW|CRM|20261120083000+0700||ADT^A04^ADT_A01|C1|P|2.5|||AL|NE|VNM|UNICODE UTF-8"
    )
    return "\r".join([head, *segments]).encode("utf-8")


@pytest.mark.parametrize("eol", [b"\r", b"\n", b"\r\n"])
def test_segment_terminators(eol: bytes) -> None:
    data = A04.replace(b"\r", eol)
    msg = parse_message(data)
    assert [s.name for s in msg.all_segments] == ["MSH", "EVN", "PID", "PV1", "PV2", "NK1"]
    assert msg.get("PID-5.1") == "Nguyễn"


def test_utf8_bom_and_trailing_blank_lines() -> None:
    msg = parse_message(b"\xef\xbb\xbf" + A04 + b"\r\r\n")
    assert msg.header.control_id == "HIS000001"
    assert msg.get("PID-5.1") == "Nguyễn"


def test_header_fields() -> None:
    h = parse_message(A04).header
    assert (h.sending_application, h.sending_facility) == ("HIS_VN", "BVDK_HN")
    assert (h.receiving_application, h.receiving_facility) == ("FHIRGATE", "CRM_CSKH")
    assert (h.message_code, h.trigger_event, h.structure) == ("ADT", "A04", "ADT_A01")
    assert (h.control_id, h.processing_id, h.version) == ("HIS000001", "P", "2.5")
    assert (h.accept_ack_type, h.application_ack_type) == ("AL", "NE")
    assert (h.charset, h.codec) == ("UNICODE UTF-8", "utf-8")
    assert h.datetime == "20261120083000+0700"


def test_msh_numbering_matches_standard() -> None:
    msh = parse_message(A04).segment("MSH")
    assert msh is not None
    assert msh.field(1) == "|"
    assert msh.field(2) == "^~\\&"
    assert msh.field(3) == "HIS_VN"
    assert msh.field(10) == "HIS000001"
    assert msh.component(9, 2) == "A04"


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("UNICODE UTF-8", "utf-8"),
        ("UNICODE", "utf-8"),
        ("8859/1", "iso8859-1"),
        ("ASCII", "ascii"),
        ("", "utf-8"),
    ],
)
def test_charsets(label: str, codec: str) -> None:
    head = f"MSH|^~\\&|A|F|G|C|20261120||ADT^A04|C1|P|2.5|||||VNM|{label}"
    name = "Lê^Hà" if codec != "ascii" else "Le^Ha"
    data = f"{head}\rPID|1||X1^^^F^MR||{name}".encode(codec)
    msg = parse_message(data)
    assert msg.codec == codec
    assert msg.get("PID-5.1") in ("Lê", "Le")


def test_default_charset_is_configurable() -> None:
    data = "MSH|^~\\&|A|F|G|C|20261120||ADT^A04|C1|P|2.5\rPID|1||X1||Lê^Hà".encode("latin-1")
    with pytest.raises(UnparseableMessage):
        parse_message(data)
    assert parse_message(data, default_charset="iso8859-1").get("PID-5.1") == "Lê"


def test_undecodable_and_unknown_charsets_are_refused() -> None:
    with pytest.raises(UnparseableMessage) as info:
        parse_message(_msg("PID|1||X1||L\xeaH").replace(b"L\xc3\xaaH", b"L\xeaH"))
    assert info.value.location == "MSH-18"
    with pytest.raises(UnparseableMessage):
        parse_message(_msg().replace(b"UNICODE UTF-8", b"KLINGON"))


def test_custom_encoding_characters() -> None:
    data = b"MSH#*@!%#A#F#G#C#20261120##ADT*A04*ADT_A01#C1#P#2.5\rPID#1##X1***FAC*MR@X2***BCA*NI##Tran*Binh!F!*Van%x"
    msg = parse_message(data)
    assert msg.header.encoding_characters == "*@!%"
    assert msg.header.trigger_event == "A04"
    pid = msg.segment("PID")
    assert pid is not None
    reps = pid.repetitions(3)
    assert [r.component(1) for r in reps] == ["X1", "X2"]
    assert reps[1].component(5) == "NI"
    assert pid.component(5, 2) == "Binh#"  # !F! is the escaped field separator
    assert pid.component(5, 3, 2) == "x"


def test_escape_sequences_decoded_on_read() -> None:
    msg = parse_message(_msg("PID|1||X1||A\\F\\B\\S\\C\\T\\D\\R\\E\\E\\F^G\\X4C\\\\XC3AA\\"))
    pid = msg.segment("PID")
    assert pid is not None
    assert pid.raw(5).count("^") == 1  # escapes did not split at tokenizing time
    assert pid.component(5, 1) == "A|B^C&D~E\\F"
    assert pid.component(5, 2) == "GLê"


def test_unescape_unknown_and_unterminated_sequences_stay_literal() -> None:
    enc = parse_message(A04).encoding
    assert unescape("a\\Zfoo\\b", enc) == "a\\Zfoo\\b"
    assert unescape("a\\F", enc) == "a\\F"
    assert unescape("x\\.br\\y", enc) == "x\ny"
    assert unescape("\\H\\bold\\N\\", enc) == "bold"


def test_repetitions_and_paths() -> None:
    msg = parse_message(A04)
    pid = msg.segment("PID")
    assert pid is not None
    assert [r.component(5) for r in pid.repetitions(3)] == ["MR", "NI", "HC"]
    assert msg.get("PID-3[2].1") == "079085001234"
    assert msg.get("PID-3[3].4") == "BHXH"
    assert msg.get("PID-13[2].4") == "an.nguyen@example.vn"
    assert msg.get("PID-99") == ""
    assert msg.get("ZZZ-1") == ""
    assert pid.repetitions(4) == []
    with pytest.raises(ValueError):
        msg.get("not a path")


def test_z_segments_are_kept_and_ignored() -> None:
    msg = parse_message(A04 + b"\rZPI|1|custom^data")
    assert msg.segment("ZPI") is not None
    assert msg.get("ZPI-2.2") == "data"


def test_patient_key() -> None:
    assert patient_key(parse_message(A04)) == "BVDK_HN|BN000123"
    assert patient_key(parse_message(_msg())) is None
    # MR is preferred over an earlier repetition of another type
    assert patient_key(parse_message(_msg("PID|1||C1^^^BCA^NI~M1^^^H1^MR"))) == "H1|M1"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"EVN|A04",
        b"MSH",
        b"MSHX^~\\&|",
        b"MSH|^~|A",
        b"MSH|^^\\&|A",
        b"MSH|^~\\&|A|B|C|D|2026||ADT^A04|1|P|2.5\rpid|1",
        b"MSH|^~\\&|A|B|C|D|2026||ADT^A04|1|P|2.5\rMSH|^~\\&|A",
    ],
)
def test_unparseable(data: bytes) -> None:
    with pytest.raises(UnparseableMessage):
        parse_message(data)


@pytest.mark.parametrize("version", ["2.2", "3.0", "", "2.9", "abc"])
def test_unsupported_version(version: str) -> None:
    data = f"MSH|^~\\&|A|B|C|D|2026||ADT^A04|1|P|{version}".encode()
    with pytest.raises(UnsupportedVersion) as info:
        parse_message(data)
    assert info.value.location == "MSH-12"
    header = peek_header(data)
    assert header is not None and header.control_id == "1"


@pytest.mark.parametrize(
    "version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.2"]
)
def test_supported_versions(version: str) -> None:
    assert parse_message(f"MSH|^~\\&|A|B|C|D|2026||ADT^A04|1|P|{version}".encode()).header.version == version
