"""mappers.hl7_content: what a retry of the same message has in common with the first delivery."""

from __future__ import annotations

from mappers.hl7_content import canonical_content

A04 = (
    "MSH|^~\\&|HIS_VN|BVDK_HN|FHIRGATE|CRM_CSKH|20261120083000+0700||ADT^A04^ADT_A01|HIS000001|P|2.5"
    "|||AL|NE|VNM|UNICODE UTF-8\r"
    "EVN|A04|20261120083000+0700\r"
    "PID|1||BN000123^^^BVDK_HN^MR||Nguyễn^An^Văn^^^^L||19850312|M|||||0912345678^PRN^CP\r"
    "PV1|1|O|KHAM^P101^01^BVDK_HN\r"
).encode()


def test_terminators_bom_and_blank_lines_do_not_count() -> None:
    crlf = b"\xef\xbb\xbf" + A04.replace(b"\r", b"\r\n") + b"\r\n\r\n"
    assert canonical_content(A04.replace(b"\r", b"\n")) == canonical_content(A04) == canonical_content(crlf)


def test_msh7_restamped_on_retry_does_not_count() -> None:
    restamped = A04.replace(b"20261120083000+0700||ADT", b"20261120091500+0700||ADT", 1)
    assert canonical_content(restamped) == canonical_content(A04)
    assert b"20261120083000" not in canonical_content(A04).split(b"\r")[0]


def test_trailing_empty_fields_do_not_count() -> None:
    assert canonical_content(A04.replace(b"BVDK_HN\r", b"BVDK_HN|||\r")) == canonical_content(A04)


def test_any_other_difference_counts() -> None:
    for old, new in (
        (b"0912345678", b"0977888999"),  # the phone
        (b"ADT^A04^ADT_A01", b"ADT^A08^ADT_A01"),  # MSH-9
        (b"EVN|A04|20261120083000", b"EVN|A04|20261120083100"),  # EVN-2: another event
        ("Văn".encode(), "Vân".encode()),
    ):
        assert canonical_content(A04.replace(old, new, 1)) != canonical_content(A04), new
