"""SIU appointment timing (TQ1, AIS, AIG/AIL/AIP, SCH-11) and participants.

Messages follow the SIU^S12 structure of HL7 v2.5.1 ch. 10 (SCH, TQ1, PID, RGS group
with AIS/AIG/AIL/AIP) and the v2-to-FHIR segment maps for SCH/AIS/AIG/AIL/AIP.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidInput, RequiredFieldMissing
from mappers.ack import build_ack
from mappers.hl7_message import parse_message
from mappers.router import map_message
from mappers.siu_timing import duration
from tests.mappers.helpers import resources, validate_bundle
from tests.mappers.test_properties import SETTINGS

START, END = "2021-09-24T09:30:00+07:00", "2021-09-24T10:20:00+07:00"


def siu(
    *,
    version: str = "2.5.1",
    event: str = "S12",
    sch9: str = "",
    sch10: str = "",
    sch11: str = "",
    status: str = "Booked",
    tq1: str | None = None,
    group: tuple[str, ...] = (),
) -> bytes:
    """A SIU^Sxx: SCH fields by number, an optional TQ1, a Vietnamese PID, an RGS group."""
    sch = [""] * 26
    sch[1] = "LH21092401^BVDK_HN"
    sch[2] = "LH21092401^BVDK_HN"
    sch[6] = "^Đặt lịch khám"
    sch[7] = "CHECKUP^Khám tim mạch định kỳ^HL70276"
    sch[8] = "NORMAL^Normal^HL70277"
    sch[9], sch[10], sch[11] = sch9, sch10, sch11
    sch[16] = sch[20] = "TN07^Đỗ^Hạnh^Thị"
    sch[25] = status
    lines = [
        f"MSH|^~\\&|HIS_VN|BVDK_HN|FHIRGATE|CRM_CSKH|20210920101500+0700||SIU^{event}^SIU_S12|"
        f"SIU2109200{event[1:]}|P|{version}|||AL|NE|VNM|UNICODE UTF-8",
        "SCH" + "|".join(sch),
    ]
    if tq1 is not None:
        lines.append(tq1)
    lines.append(
        "PID|1||BN210924^^^BVDK_HN^MR||Phạm^Thu^Thị^^^^L||19780514|F|||"
        "12 Lý Thường Kiệt^^Phường Cửa Nam^Hà Nội^^VN||0912345678^PRN^CP"
    )
    lines += ["RGS|1|A", *group]
    return "\r".join(lines).encode("utf-8")


# A real-shaped resource group: the service, an echo machine, the consulting room, the doctor.
# No times here: a v2.5.1 sender that fills TQ1 need not repeat them per resource.
GROUP = (
    "AIS|1|A|TM01^Khám tim mạch^LOCAL",
    "AIG|1|A|SA02^Máy siêu âm tim^LOCAL|TB^Thiết bị^LOCAL",
    "AIL|1|A|KTM^P201^^BVDK_HN^^C^B^2^Phòng khám Tim mạch 201|C^Clinic^HL70305",
    "AIP|1|A|BS011^Trần^Hùng^Văn^^^BS|BS^Bác sĩ^LOCAL",
)
TQ1_ONLY = "TQ1|1||||||20210924093000+0700|20210924102000+0700"


def appointment(raw: bytes) -> dict[str, object]:
    result = map_message(parse_message(raw))
    validate_bundle(result.bundle)
    [appt] = resources(result, "Appointment")
    return appt


def test_timing_only_in_tq1() -> None:
    appt = appointment(siu(tq1=TQ1_ONLY, group=GROUP))
    assert (appt["start"], appt["end"], appt["status"]) == (START, END, "booked")
    assert "minutesDuration" not in appt  # no duration was sent, only start and end


def test_tq1_wins_over_a_stale_sch11() -> None:
    # The corpus shape: SCH-11 still carries an old 8-day window, TQ1 the real slot.
    stale = "^^^20201001^20201009"
    appt = appointment(siu(sch11=stale, tq1=TQ1_ONLY, group=GROUP))
    assert (appt["start"], appt["end"]) == (START, END)


def test_tq1_service_duration_gives_the_end() -> None:
    appt = appointment(siu(tq1="TQ1|1|||||50^min&minute&UCUM|20210924093000+0700", group=GROUP))
    assert (appt["start"], appt["end"], appt["minutesDuration"]) == (START, END, 50)


def test_only_ais_start_and_duration() -> None:
    group = ("AIS|1|A|TM01^Khám tim mạch^LOCAL|20210924093000+0700|||50|MIN^Phút^ISO+", *GROUP[1:])
    appt = appointment(siu(group=group))
    assert (appt["start"], appt["end"], appt["minutesDuration"]) == (START, END, 50)


def test_several_services_span_from_first_start_to_last_end() -> None:
    group = (
        "AIS|1|A|TM01^Khám tim mạch^LOCAL|20210924093000+0700|||20|MIN",
        "AIS|2|A|SA01^Siêu âm tim^LOCAL|20210924095000+0700|||30|min",
        "AIS|3|D|XQ01^Chụp X-quang^LOCAL|20210924120000+0700|||1|h",  # deleted: ignored
    )
    appt = appointment(siu(group=group))
    assert (appt["start"], appt["end"], appt["minutesDuration"]) == (START, END, 50)


@pytest.mark.parametrize(
    "segment",
    [
        "AIL|1|A|KTM^P201^^BVDK_HN^^C^B^2^Phòng khám Tim mạch 201|||20210924093000+0700|||50|MIN",
        "AIP|1|A|BS011^Trần^Hùng^Văn^^^BS|BS^Bác sĩ^LOCAL||20210924093000+0700|||50|MIN",
        # AIG-6 is the resource quantity: the start is AIG-8, the duration AIG-11/12.
        "AIG|1|A|SA02^Máy siêu âm tim^LOCAL|TB^Thiết bị^LOCAL||1||20210924093000+0700|||50|MIN",
    ],
    ids=["AIL-6", "AIP-6", "AIG-8"],
)
def test_resource_segment_timing(segment: str) -> None:
    appt = appointment(siu(version="2.8", group=("AIS|1|A|TM01^Khám tim mạch^LOCAL", segment)))
    assert (appt["start"], appt["end"]) == (START, END)


def test_v23_sch11_is_the_last_fallback() -> None:
    # v2.3: no TQ1 segment exists; SCH-11 TQ.4/TQ.5 without offset are Vietnam time.
    appt = appointment(siu(version="2.3", sch9="50", sch10="MIN", sch11="^^50^20210924093000^20210924102000"))
    assert (appt["start"], appt["end"], appt["minutesDuration"]) == (START, END, 50)


def test_sch11_is_not_read_from_v27_on() -> None:
    with pytest.raises(RequiredFieldMissing) as info:
        map_message(parse_message(siu(version="2.8", sch11="^^^20201001^20201009", group=GROUP)))
    assert info.value.location == "TQ1-7"
    assert "SCH-11" not in info.value.message


def test_booked_without_any_timing_is_refused_with_ae_naming_the_field() -> None:
    raw = siu(group=GROUP)
    with pytest.raises(RequiredFieldMissing) as info:
        map_message(parse_message(raw))
    assert info.value.location == "TQ1-7" and "booked" in info.value.message
    header = parse_message(raw).header
    ack = build_ack(header, ack_code=info.value.hl7_ack, error=info.value, control_id="A1").decode()
    segments = ack.split("\r")
    assert segments[1].startswith("MSA|AE|SIU210920012")
    err = next(seg for seg in segments if seg.startswith("ERR|"))
    assert err.startswith("ERR||TQ1^1^7|101^Required field missing^HL70357|E|")


def test_start_without_end_or_duration_is_refused_for_booked() -> None:
    with pytest.raises(RequiredFieldMissing) as info:
        map_message(parse_message(siu(tq1="TQ1|1||||||20210924093000+0700", group=GROUP)))
    assert info.value.location == "TQ1-8"


def test_a_cancellation_may_come_without_times() -> None:
    appt = appointment(siu(event="S15", status="Cancelled", tq1="TQ1|1||||||20210924093000+0700"))
    assert appt["status"] == "cancelled"
    assert "start" not in appt and "end" not in appt  # app-2: both or neither


def test_end_before_start_is_refused() -> None:
    with pytest.raises(InvalidInput) as info:
        map_message(parse_message(siu(tq1="TQ1|1||||||20210924102000+0700|20210924093000+0700")))
    assert info.value.location == "TQ1-8"


def test_participants_from_aip_ail_and_aig() -> None:
    appt = appointment(siu(tq1=TQ1_ONLY, group=GROUP))
    participants = appt["participant"]
    assert isinstance(participants, list)
    patient, doctor, room, machine = participants
    assert patient["actor"]["type"] == "Patient"
    assert doctor["actor"]["type"] == "Practitioner"
    assert doctor["actor"]["display"] == "Trần Văn Hùng"
    assert doctor["actor"]["identifier"]["value"] == "BS011"
    assert doctor["type"][0]["coding"][0]["code"] == "BS"
    assert room["actor"] == {"type": "Location", "display": "Phòng khám Tim mạch 201"}
    assert machine["actor"] == {"display": "Máy siêu âm tim", "identifier": {"value": "SA02"}}
    assert machine["type"][0]["coding"][0]["code"] == "TB"
    assert all(p["status"] == "accepted" for p in participants)


def test_deleted_resources_are_not_participants() -> None:
    group = tuple(s.replace("|1|A|", "|1|D|", 1) if s[:3] in ("AIG", "AIL") else s for s in GROUP)
    participants = appointment(siu(tq1=TQ1_ONLY, group=group))["participant"]
    assert isinstance(participants, list)
    assert [p["actor"].get("type") for p in participants] == ["Patient", "Practitioner"]


def test_duration_units() -> None:
    assert duration("50", "") == dt.timedelta(minutes=50)  # HL7 default unit: minutes
    assert duration("1.5", "h") == dt.timedelta(minutes=90)
    assert duration("1", "D") == dt.timedelta(days=1)
    assert duration("90", "s") == dt.timedelta(seconds=90)
    for amount, unit in (
        ("", "MIN"),
        ("abc", "MIN"),
        ("-5", "MIN"),
        ("0", "MIN"),
        ("5", "XYZ"),
        ("9e9", "D"),
    ):
        assert duration(amount, unit) is None, (amount, unit)


@given(
    st.datetimes(min_value=dt.datetime(2020, 1, 1), max_value=dt.datetime(2035, 12, 31)),
    st.integers(1, 24 * 60),
    st.sampled_from([("MIN", 1), ("min", 1), ("", 1), ("H", 60), ("h", 60)]),
    st.sampled_from(["TQ1", "AIS", "AIL", "AIP", "AIG", "SCH"]),
    st.sampled_from(["+0700", "+0000", "-0500", ""]),
)
@SETTINGS
def test_end_is_start_plus_duration_wherever_it_is_sent(
    start: dt.datetime, amount: int, unit: tuple[str, int], where: str, offset: str
) -> None:
    code, factor = unit
    start = start.replace(second=0, microsecond=0)
    stamp = f"{start:%Y%m%d%H%M%S}{offset}"
    service = "AIS|1|A|KHAM^Khám tổng quát^LOCAL"
    kwargs: dict[str, object] = {"version": "2.6"}
    if where == "TQ1":
        kwargs["tq1"] = f"TQ1|1|||||{amount}^{code}|{stamp}"
    elif where == "AIS":
        service += f"|{stamp}|||{amount}|{code}"
    elif where == "AIG":
        kwargs["group"] = (f"AIG|1|A|G1^Ghế nha^LOCAL|TB^Thiết bị||1||{stamp}|||{amount}|{code}",)
    elif where in ("AIL", "AIP"):
        kwargs["group"] = (f"{where}|1|A|X1^Y|||{stamp}|||{amount}|{code}",)
    else:
        kwargs |= {"sch9": str(amount), "sch10": code, "sch11": f"^^^{stamp}"}
    kwargs["group"] = (service, *kwargs.get("group", ()))  # type: ignore[misc]
    appt = appointment(siu(**kwargs))  # type: ignore[arg-type]
    begin = dt.datetime.fromisoformat(str(appt["start"]))
    finish = dt.datetime.fromisoformat(str(appt["end"]))
    assert begin <= finish
    assert finish - begin == dt.timedelta(minutes=amount * factor)
    sent = offset or "+0700"  # no offset: Vietnam time, as for every other HL7 time
    sign = -1 if sent[0] == "-" else 1
    assert begin.utcoffset() == sign * dt.timedelta(hours=int(sent[1:3]), minutes=int(sent[3:]))
    assert begin.replace(tzinfo=None) == start
