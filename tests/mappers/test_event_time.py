"""mappers.event_time: EVN-2, else EVN-6, else MSH-7 (HL7 v2.5.1 ch. 3.4.1 and 2.14.9.7), with the offset."""

from __future__ import annotations

import pytest

from common import InvalidInput
from mappers import event_instant, map_message, parse_message

MSH = "MSH|^~\\&|HIS_VN|BVDK_HN|FHIRGATE|CRM|{msh7}||ADT^A08^ADT_A01|C1|P|2.5|||AL|NE|VNM|UNICODE UTF-8"
PID = "PID|1||BN1^^^BVDK_HN^MR||Nguyễn^An^Văn^^^^L||19850312|M"


def msg(msh7: str, evn: str | None) -> bytes:
    lines = [MSH.format(msh7=msh7)] + ([evn] if evn is not None else []) + [PID]
    return "\r".join(lines).encode()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (
            msg("20261122110000+0700", "EVN|A08|20261122100000+0700||||20261122093000+0700"),
            "2026-11-22T10:00:00+07:00",
        ),
        (msg("20261122110000+0700", "EVN|A08|||||20261122093000+0700"), "2026-11-22T09:30:00+07:00"),
        (msg("20261122110000+0700", None), "2026-11-22T11:00:00+07:00"),
        (msg("20261122110000", "EVN|A08"), "2026-11-22T11:00:00+07:00"),  # no offset: Vietnam time
        (msg("20261122110000+0700", "EVN|A08|20261122030000+0000"), "2026-11-22T03:00:00+00:00"),
    ],
)
def test_event_time_order_of_fields(raw: bytes, expected: str) -> None:
    parsed = parse_message(raw)
    assert event_instant(parsed) == expected
    result = map_message(parsed)
    assert result.event_time == expected and result.event_time_us is not None


def test_utc_microseconds_compare_across_offsets() -> None:
    vn = map_message(parse_message(msg("x", "EVN|A08|20261122100000+0700")))
    utc = map_message(parse_message(msg("x", "EVN|A08|20261122030000+0000")))
    assert vn.event_time_us == utc.event_time_us == 1_795_316_400_000_000


def test_an_invalid_event_time_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidInput) as caught:
        map_message(parse_message(msg("20261122110000+0700", "EVN|A08|2026-11-22")))
    assert caught.value.location == "EVN-2"
