"""Smaller defects found with real feeds (issue #15 item 7), with real-shaped v2.5/v2.8 messages.

* a whitespace-only MSH-15/16 is original mode (HL7 v2.5 ch. 2.9.3: enhanced mode needs a value);
* an undecodable message is refused naming its sender and control id, with the table 0357
  code of the fault (102 data type error, 103 table value not found -- not 100);
* phones in PID-13 XTN-12 only (v2.5 "unformatted telephone number") and in PID-40 (v2.7+);
* ADT^A05 (pre-admit) with PV1-45 stays ``planned``; PV1-50 becomes a second Encounter.identifier.
"""

from __future__ import annotations

from typing import Any

from common.errors import UnparseableMessage
from common.identifiers import alternate_visit_system, visit_system
from mappers.ack import acks_to_send, build_fallback_ack
from mappers.hl7_message import parse_message, peek_header
from mappers.router import map_message

MSH = "MSH|^~\\&|HIS_VN|BVDK_HN|FHIRGATE|CRM_CSKH|20261124071500+0700||{event}|{control}|P|{version}"


def segment(name: str, fields: dict[int, str]) -> str:
    """``name|f1|...|fn`` with ``fields`` at their HL7 positions (SEG-n)."""
    top = max(fields)
    return "|".join([name, *(fields.get(n, "") for n in range(1, top + 1))])


def message(*lines: str) -> bytes:
    return "\r".join(lines).encode("utf-8") + b"\r"


def resources(raw: bytes) -> dict[str, dict[str, Any]]:
    bundle = map_message(parse_message(raw)).bundle
    return {e["resource"]["resourceType"]: e["resource"] for e in bundle["entry"] if "resource" in e}


PID_FIELDS = {
    1: "1",
    3: "BN000777^^^BVDK_HN^MR",
    5: "Phạm^Thu^Minh^^^^L",
    7: "19900215",
    8: "F",
    11: "25 Nguyễn Du^^Phường Hai Bà Trưng^Hà Nội^100000^VNM^H",
}


# ------------------------------------------------------------------------------ MSH-15/16


def test_blank_msh15_16_is_original_mode() -> None:
    raw = message(
        MSH.format(event="ADT^A04^ADT_A01", control="HIS000101", version="2.5") + "||| | |VNM|UNICODE UTF-8",
        "EVN|A04|20261124071500+0700",
        segment("PID", PID_FIELDS),
    )
    header = parse_message(raw).header
    for strict in (True, False):
        assert acks_to_send(header, success=True, strict=strict) == (False, True)
    # a real value still switches to enhanced mode
    enhanced = parse_message(raw.replace(b"||| | |VNM", b"|||AL|AL|VNM", 1)).header
    assert acks_to_send(enhanced, success=True, strict=True) == (True, True)


# ------------------------------------------------------------------------------ charsets


def _refusal(raw: bytes) -> tuple[UnparseableMessage, bytes]:
    try:
        parse_message(raw)
    except UnparseableMessage as exc:
        return exc, build_fallback_ack(raw, exc, control_id="ACK0001")
    raise AssertionError("parsed")


def _ack_fields(ack: bytes) -> tuple[list[str], list[str], str]:
    lines = ack.decode("ascii").split("\r")
    msh = lines[0].split("|")
    msa = next(line for line in lines if line.startswith("MSA")).split("|")
    err = next(line for line in lines if line.startswith("ERR"))
    return msh, msa, err


def test_bytes_invalid_in_the_declared_charset_get_ar_102_addressed_to_the_sender() -> None:
    latin1 = (
        MSH.format(event="ADT^A04^ADT_A01", control="HIS000102", version="2.5")
        + "|||AL|NE|VNM|UNICODE UTF-8\r"
        "PID|1||BN000778^^^BVDK_HN^MR||Tr\xe2n^Anh||19850312|M\r"
    ).encode("latin-1")  # "Trân" in Latin-1 under an MSH-18 that says UTF-8
    error, ack = _refusal(latin1)
    assert error.hl7_ack == "AR" and error.hl7_error_code == "102" and error.location == "MSH-18"
    msh, msa, err = _ack_fields(ack)
    assert msh[2:6] == ["FHIRGATE", "CRM_CSKH", "HIS_VN", "BVDK_HN"]  # sender and receiver swapped
    assert msa[1:3] == ["AR", "HIS000102"]
    assert "^102^" in err or "102^" in err
    assert "100" not in err.split("|")[3]


def test_a_charset_outside_table_0211_gets_ar_103() -> None:
    tcvn = (
        MSH.format(event="ADT^A08^ADT_A01", control="HIS000103", version="2.5") + "|||||VNM|TCVN 5712\r"
        "PID|1||BN000779^^^BVDK_HN^MR||Le^Hoa||19700101|F\r"
    ).encode("ascii")
    error, ack = _refusal(tcvn)
    assert error.hl7_error_code == "103" and error.location == "MSH-18"
    msh, msa, err = _ack_fields(ack)
    assert msh[4:6] == ["HIS_VN", "BVDK_HN"] and msa[1:3] == ["AR", "HIS000103"]
    assert "103" in err
    header = peek_header(tcvn)
    assert header is not None and header.control_id == "HIS000103" and header.charset == "TCVN 5712"


# ------------------------------------------------------------------------------ phones


def test_pid13_with_only_xtn12_is_read() -> None:
    raw = message(
        MSH.format(event="ADT^A04^ADT_A01", control="HIS000104", version="2.5") + "|||||VNM|UNICODE UTF-8",
        "EVN|A04|20261124071500+0700",
        segment("PID", {**PID_FIELDS, 13: "^PRN^CP^^^^^^^^^0912 345 678"}),
    )
    telecom = resources(raw)["Patient"]["telecom"]
    assert [(t["system"], t["value"], t.get("use")) for t in telecom] == [("phone", "+84912345678", "mobile")]


def test_pid40_is_read_and_not_repeated() -> None:
    pid = {
        **PID_FIELDS,
        40: "^PRN^CP^^84^912^345678~^WPN^PH^^84^24^38261234~^NET^Internet^thu.pham@example.vn",
    }
    raw = message(
        MSH.format(event="ADT^A04^ADT_A01", control="HIS000105", version="2.8") + "|||||VNM|UNICODE UTF-8",
        "EVN|A04|20261124071500+0700",
        segment("PID", pid),
    )
    telecom = resources(raw)["Patient"]["telecom"]
    assert [(t["system"], t["value"], t.get("use")) for t in telecom] == [
        ("phone", "+84912345678", "mobile"),
        ("phone", "+842438261234", "work"),
        ("email", "thu.pham@example.vn", None),
    ]
    # a sender in transition fills PID-13 and PID-40 with the same number: once
    both = message(
        MSH.format(event="ADT^A08^ADT_A01", control="HIS000106", version="2.7") + "|||||VNM|UNICODE UTF-8",
        "EVN|A08|20261124071500+0700",
        segment("PID", {**PID_FIELDS, 13: "0912345678^PRN^CP", 40: "^PRN^CP^^84^912^345678"}),
    )
    assert [t["value"] for t in resources(both)["Patient"]["telecom"]] == ["+84912345678"]


# ------------------------------------------------------------------------------ PV1


def _pv1(**extra: str) -> str:
    fields = {
        1: "1",
        2: "P",
        3: "NOI^P305^02^BVDK_HN",
        7: "BS002^Hoàng^Lan^Thị^^^BS",
        10: "NOI",
        19: "V2026112400077^^^BVDK_HN^VN",
        44: "20261126080000+0700",
        45: "20261128170000+0700",
    }
    fields.update({int(k[1:]): v for k, v in extra.items()})
    return segment("PV1", fields)


def test_a05_pre_admit_with_pv1_45_stays_planned() -> None:
    raw = message(
        MSH.format(event="ADT^A05^ADT_A05", control="HIS000107", version="2.5") + "|||||VNM|UNICODE UTF-8",
        "EVN|A05|20261124071500+0700",
        segment("PID", PID_FIELDS),
        _pv1(),
    )
    encounter = resources(raw)["Encounter"]
    assert encounter["status"] == "planned"
    assert encounter["period"] == {"start": "2026-11-26T08:00:00+07:00", "end": "2026-11-28T17:00:00+07:00"}
    assert encounter["location"][0]["status"] == "planned"
    # the same PV1 on a discharge does finish the visit
    a03 = raw.replace(b"ADT^A05^ADT_A05", b"ADT^A03^ADT_A03").replace(b"EVN|A05", b"EVN|A03")
    assert resources(a03)["Encounter"]["status"] == "finished"


def test_pv1_50_alternate_visit_id_is_a_second_identifier() -> None:
    raw = message(
        MSH.format(event="ADT^A01^ADT_A01", control="HIS000108", version="2.5") + "|||||VNM|UNICODE UTF-8",
        "EVN|A01|20261126080000+0700",
        segment("PID", PID_FIELDS),
        _pv1(f2="I", f45="", f50="NT-2026-004211^^^BVDK_HN^VN"),
    )
    encounter = resources(raw)["Encounter"]
    assert encounter["identifier"] == [
        {"system": visit_system("BVDK_HN"), "value": "V2026112400077"},
        {"use": "secondary", "system": alternate_visit_system("BVDK_HN"), "value": "NT-2026-004211"},
    ]
    assert encounter["status"] == "in-progress"
