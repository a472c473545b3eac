"""Hypothesis properties: robustness, round-trips, ACK well-formedness."""

from __future__ import annotations

import contextlib
import datetime as dt
from typing import Literal

import hl7
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from common.errors import CarebridgeError, InvalidInput, RequiredFieldMissing, UnsupportedMessageType
from mappers.ack import build_ack, build_fallback_ack
from mappers.hl7_message import parse_message, peek_header
from mappers.router import map_message
from tests.mappers.helpers import raw, resources, validate_bundle

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FAMILIES = [
    "Nguyễn",
    "Trần",
    "Lê",
    "Phạm",
    "Hoàng",
    "Huỳnh",
    "Phan",
    "Vũ",
    "Võ",
    "Đặng",
    "Bùi",
    "Đỗ",
    "Hồ",
    "Ngô",
]
MIDDLES = ["Văn", "Thị", "Hữu", "Đức", "Ngọc", "Minh", "Thanh", "Quốc", "Thị Ngọc", ""]
GIVENS = [
    "An",
    "Bình",
    "Châu",
    "Dũng",
    "Hà",
    "Hùng",
    "Khoa",
    "Lan",
    "Mai",
    "Nhung",
    "Ánh",
    "Ðạt",
    "Yến",
    "Tuấn",
]
VIET_LETTERS = "aăâbcdđeêghiklmnoôơpqrstuưvxyáàảãạắằẳẵặấầẩẫậéèẻẽẹếềểễệíìỉĩịóòỏõọốồổỗộớờởỡợúùủũụứừửữựýỳỷỹỵ"

names = st.one_of(
    st.tuples(st.sampled_from(FAMILIES), st.sampled_from(MIDDLES), st.sampled_from(GIVENS)),
    st.tuples(
        st.text(VIET_LETTERS, min_size=1, max_size=8).map(str.title),
        st.text(VIET_LETTERS, min_size=0, max_size=8).map(str.title),
        st.text(VIET_LETTERS, min_size=1, max_size=8).map(str.title),
    ),
)
dates = st.dates(min_value=dt.date(1900, 1, 1), max_value=dt.date(2030, 12, 31))
mobiles = st.tuples(st.sampled_from(["09", "03", "07", "08", "05"]), st.integers(0, 99_999_999)).map(
    lambda p: f"{p[0]}{p[1]:08d}"
)
record_numbers = st.from_regex(r"[A-Z]{2}[0-9]{4,9}", fullmatch=True)
cccds = st.from_regex(r"0[0-9]{11}", fullmatch=True)
phone_styles = st.sampled_from(["local", "intl", "spaced"])


def _phone(mobile: str, style: str) -> str:
    if style == "intl":
        return "+84" + mobile[1:]
    if style == "spaced":
        return f"+84 {mobile[1:4]} {mobile[4:7]} {mobile[7:]}"
    return mobile


@given(st.binary(max_size=400))
@settings(max_examples=400, deadline=None)
def test_arbitrary_bytes_only_raise_carebridge_errors(data: bytes) -> None:
    try:
        msg = parse_message(data)
        map_message(msg)
    except CarebridgeError:
        pass


@given(st.text(max_size=300), st.sampled_from([b"\r", b"\n", b"\r\n"]))
@settings(max_examples=300, deadline=None)
def test_mutated_messages_only_raise_carebridge_errors(tail: str, eol: bytes) -> None:
    base = raw("adt_a04_register_outpatient.hl7").replace(b"\r", eol)
    cut = len(tail) % len(base)
    for data in (base[:cut] + tail.encode("utf-8"), base + eol + tail.encode("utf-8", "replace")):
        with contextlib.suppress(CarebridgeError):
            map_message(parse_message(data))


@given(
    names,
    dates,
    mobiles,
    phone_styles,
    record_numbers,
    cccds,
    st.sampled_from(["M", "F"]),
    st.sampled_from(["\r", "\n", "\r\n"]),
)
@SETTINGS
def test_generated_a04_round_trips(
    name: tuple[str, str, str],
    birth: dt.date,
    mobile: str,
    style: str,
    mrn: str,
    cccd: str,
    sex: str,
    eol: str,
) -> None:
    family, middle, given_name = name
    phone = _phone(mobile, style)
    text = eol.join(
        [
            "MSH|^~\\&|HIS|BVDK_HN|GW|CRM|20261120083000+0700||ADT^A04^ADT_A01|C1|P|2.5|||AL|NE|VNM|UNICODE UTF-8",
            "EVN|A04|20261120083000+0700",
            f"PID|1||{mrn}^^^BVDK_HN^MR~{cccd}^^^BCA^NI||{family}^{given_name}^{middle}^^^^L||"
            f"{birth:%Y%m%d}|{sex}|||||{phone}^PRN^CP",
            "PV1|1|O|KHAM||||||||||||||||V1|||||||||||||||||||||||||20261120083000+0700",
        ]
    )
    result = map_message(parse_message(text.encode("utf-8")))
    validate_bundle(result.bundle)
    patient = resources(result, "Patient")[0]
    human = patient["name"][0]
    assert human["family"] == family
    assert human["given"] == [p for p in (middle, given_name) if p]
    assert human["text"] == " ".join(p for p in (family, middle, given_name) if p)
    assert patient["birthDate"] == birth.isoformat()
    assert [i["value"] for i in patient["identifier"]] == [mrn, cccd]
    assert patient["telecom"][0]["value"] == "+84" + mobile[1:]
    if phone != patient["telecom"][0]["value"]:
        assert patient["telecom"][0]["extension"][0]["valueString"] == phone
    assert result.patient_key == f"BVDK_HN|{mrn}"


@given(
    names,
    record_numbers,
    st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 12, 31)),
    st.integers(5, 240),
    st.sampled_from(["S12", "S13", "S14", "S15", "S17", "S26"]),
)
@SETTINGS
def test_generated_siu_round_trips(
    name: tuple[str, str, str], mrn: str, start: dt.datetime, minutes: int, event: str
) -> None:
    family, middle, given_name = name
    start = start.replace(second=0, microsecond=0)
    end = start + dt.timedelta(minutes=minutes)
    stamp, stamp_end = f"{start:%Y%m%d%H%M%S}+0700", f"{end:%Y%m%d%H%M%S}+0700"
    text = "\r".join(
        [
            f"MSH|^~\\&|HIS|NK|GW|CRM|20261120083000+0700||SIU^{event}^SIU_S12|C2|P|2.5.1",
            f"SCH|P1^NK|F{mrn}^NK|||||KHAM^Khám^LOCAL|ROUTINE^Routine^HL70276|{minutes}|MIN^Phút|"
            f"^^{minutes}^{stamp}^{stamp_end}",
            f"PID|1||{mrn}^^^NK^MR||{family}^{given_name}^{middle}",
            f"AIS|1|A|KHAM^Khám tổng quát^LOCAL|{stamp}|||{minutes}|MIN",
            f"AIP|1|A|BS1^{family}^{given_name}^{middle}",
        ]
    )
    result = map_message(parse_message(text.encode("utf-8")))
    validate_bundle(result.bundle)
    appt = resources(result, "Appointment")[0]
    expected = {"S12": "booked", "S13": "booked", "S14": "booked", "S15": "cancelled"}
    expected |= {"S17": "entered-in-error", "S26": "noshow"}
    assert appt["status"] == expected[event]
    assert appt["start"] == f"{start:%Y-%m-%dT%H:%M:%S}+07:00"
    assert appt["end"] == f"{end:%Y-%m-%dT%H:%M:%S}+07:00"
    assert appt["identifier"][0]["value"] == f"F{mrn}"
    display = " ".join(p for p in (family, middle, given_name) if p)
    assert appt["participant"][1]["actor"]["display"] == display
    assert resources(result, "Patient")[0]["name"][0]["text"] == display


SURROGATES: tuple[Literal["Cs"]] = ("Cs",)
printable = st.text(st.characters(blacklist_categories=SURROGATES), max_size=80)
control_ids = st.from_regex(r"[A-Za-z0-9]{1,20}", fullmatch=True)
errors = st.one_of(
    st.none(),
    st.builds(InvalidInput, printable, location=st.sampled_from(["PID-7", "PID-3.1", None, "SCH-11"])),
    st.builds(RequiredFieldMissing, printable, location=st.just("PID-3")),
    st.builds(UnsupportedMessageType, printable, location=st.just("MSH-9.2"), event=st.booleans()),
)


@given(control_ids, control_ids, errors, printable, st.sampled_from(["2.3", "2.4", "2.5", "2.5.1", "2.8"]))
@SETTINGS
def test_ack_parses_back_with_python_hl7(
    inbound_id: str, ack_id: str, error: CarebridgeError | None, facility: str, version: str
) -> None:
    from mappers.ack import escape
    from mappers.hl7_encoding import EncodingChars

    enc = EncodingChars("|", "^", "~", "\\", "&")
    fac = escape(facility, enc)
    data = f"MSH|^~\\&|HIS|{fac}|GW|CRM|20261120||ADT^A04|{inbound_id}|P|{version}".encode()
    header = parse_message(data).header
    code = error.hl7_ack if error else "AA"
    ack = build_ack(header, ack_code=code, error=error, control_id=ack_id)
    parsed = hl7.parse(ack.decode("utf-8"))
    msa = parsed.segment("MSA")
    assert str(msa[1]) == code
    assert str(msa[2]) == inbound_id
    assert str(parsed.segment("MSH")[10]) == ack_id
    assert len(parsed) == (3 if error else 2)
    # and our own tokenizer reads the text back unchanged
    back = parse_message(ack)
    if error is not None and version >= "2.5":
        assert back.segment("ERR") is not None
        assert back.get("ERR-8") == error.message.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


@given(st.binary(max_size=200), control_ids)
@settings(max_examples=200, deadline=None)
def test_fallback_ack_always_parses(data: bytes, ack_id: str) -> None:
    try:
        parse_message(data)
        return
    except CarebridgeError as exc:
        error = exc
    ack = build_fallback_ack(data, error, control_id=ack_id)
    header = peek_header(ack) if ack.startswith(b"MSH|") else None
    if header is not None:
        parsed = hl7.parse(ack.decode(header.codec, errors="replace"))
        assert str(parsed.segment("MSA")[1]) == "AR"
