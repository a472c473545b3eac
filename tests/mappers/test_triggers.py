"""Every ADT and SIU trigger gets an answer (issue #15 item 6), real-shaped v2.5.1 messages.

HL7 v2.5.1 ch. 3 (ADT) and ch. 10 (SIU) message structures, Encounter.status per
the v2-to-FHIR IG ConceptMap table-hl70003-to-encounter-status; Vietnamese
names and wards.  Each newly handled trigger is mapped and the resulting
resource asserted; the other triggers of table 0003 are ignored with a reason;
codes outside table 0003 stay refused (AR 201).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from common import MessageIgnored, UnsupportedMessageType, visit_system
from mappers.ack import build_ack
from mappers.hl7_message import parse_message
from mappers.router import map_message
from mappers.triggers import ADT_EVENTS, IGNORE_REASONS, SIU_EVENTS, catalogue
from tests.mappers.helpers import validate_bundle

DOCS = Path(__file__).resolve().parents[2] / "docs" / "hl7-mapping.md"
MSH = "MSH|^~\\&|HIS_VN|BVDK_HN|FHIRGATE|CRM_CSKH|20261125083000+0700||{event}|{control}|P|2.5.1|||AL|NE|VNM|UNICODE UTF-8"
PID = (
    "PID|1||BN000456^^^BVDK_HN^MR~001190012345^^^BCA^NI||Phạm^Minh^Thị^^^^L||19900704|F|||"
    "45 Nguyễn Trãi^^Phường Thanh Xuân^Hà Nội^100000^VNM^H||0903111222^PRN^CP"
)
WARD = "NOI^P305^B2^BVDK_HN^^^^^Khoa Nội"
XRAY = "CDHA^XQ01^^BVDK_HN^^^^^Khoa Chẩn đoán hình ảnh"
ICU = "HSTC^P101^B1^BVDK_HN^^^^^Khoa Hồi sức tích cực"
VISIT = "V2026112100007"


def pv1(**fields: str) -> str:
    """PV1 of the inpatient visit, fields given as ``f3=...`` (PV1-n)."""
    values = {2: "I", 3: WARD, 7: "BS014^Đỗ^Hùng^Quốc^^^BS", 19: VISIT, 44: "20261121091500+0700"}
    values.update({int(k[1:]): v for k, v in fields.items()})
    return "|".join(["PV1", *(values.get(n, "") for n in range(1, max(values) + 1))])


def adt(trigger: str, *segments: str, structure: str = "ADT_A01") -> bytes:
    lines = [
        MSH.format(event=f"ADT^{trigger}^{structure}", control=f"HIS{trigger}01"),
        f"EVN|{trigger}|20261125083000+0700",
        *segments,
    ]
    return ("\r".join(lines) + "\r").encode("utf-8")


def mapped(raw: bytes) -> dict[str, list[dict[str, Any]]]:
    result = map_message(parse_message(raw))
    validate_bundle(result.bundle)
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in result.bundle["entry"]:
        out.setdefault(entry["resource"]["resourceType"], []).append(entry)
    return out


def encounter(raw: bytes) -> dict[str, Any]:
    (entry,) = mapped(raw)["Encounter"]
    assert entry["request"]["method"] == "PUT"  # a state event restates the visit
    assert entry["request"]["url"].startswith("Encounter?identifier=")
    resource: dict[str, Any] = entry["resource"]
    return resource


def locations(enc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(loc["location"]["display"], loc["status"]) for loc in enc.get("location", [])]


# -- pending admit / transfer / discharge and their cancels ---------------------------------


def test_a14_pending_admit_is_planned() -> None:
    enc = encounter(adt("A14", PID, pv1(f44=""), structure="ADT_A05"))
    assert enc["status"] == "planned"
    assert locations(enc) == [("Khoa Nội", "planned")]
    assert "end" not in enc.get("period", {})


@pytest.mark.parametrize(("trigger", "structure"), [("A27", "ADT_A21"), ("A38", "ADT_A38")])
def test_cancel_pending_admit_and_pre_admit_are_cancelled(trigger: str, structure: str) -> None:
    enc = encounter(adt(trigger, PID, pv1(f44=""), structure=structure))
    assert enc["status"] == "cancelled"


def test_a15_pending_transfer_adds_the_pending_location_planned() -> None:
    enc = encounter(adt("A15", PID, pv1(f42=ICU), structure="ADT_A16"))
    assert enc["status"] == "in-progress"
    assert locations(enc) == [("Khoa Nội", "active"), ("Khoa Hồi sức tích cực", "planned")]


def test_a26_cancel_pending_transfer_keeps_only_the_current_location() -> None:
    enc = encounter(adt("A26", PID, pv1(), structure="ADT_A21"))
    assert enc["status"] == "in-progress"
    assert locations(enc) == [("Khoa Nội", "active")]


def test_a12_cancel_transfer_is_back_in_the_original_location() -> None:
    enc = encounter(adt("A12", PID, pv1(f6=ICU), structure="ADT_A12"))
    assert enc["status"] == "in-progress"
    assert locations(enc) == [("Khoa Nội", "active")]


@pytest.mark.parametrize(("trigger", "structure"), [("A16", "ADT_A16"), ("A25", "ADT_A21")])
def test_pending_discharge_and_its_cancel_never_finish_the_visit(trigger: str, structure: str) -> None:
    """PV1-45 on a pending discharge is the expected time: never ``finished`` (service completed)."""
    enc = encounter(adt(trigger, PID, pv1(f45="20261126100000+0700"), structure=structure))
    assert enc["status"] == "in-progress"
    assert enc["period"] == {"start": "2026-11-21T09:15:00+07:00"}
    assert locations(enc) == [("Khoa Nội", "active")]


# -- patient tracking ------------------------------------------------------------------------


def test_a09_departing_keeps_the_bed_reserved_and_plans_the_destination() -> None:
    enc = encounter(adt("A09", PID, pv1(f11=XRAY), structure="ADT_A09"))
    assert enc["status"] == "in-progress"
    assert locations(enc) == [
        ("Khoa Nội", "reserved"),
        ("Khoa Chẩn đoán hình ảnh", "planned"),
    ]


def test_a10_arriving_at_a_temporary_location() -> None:
    enc = encounter(adt("A10", PID, pv1(f11=XRAY), structure="ADT_A09"))
    assert enc["status"] == "in-progress"
    assert locations(enc) == [("Khoa Nội", "reserved"), ("Khoa Chẩn đoán hình ảnh", "active")]


def test_a10_arriving_back_in_the_assigned_bed() -> None:
    enc = encounter(adt("A10", PID, pv1(), structure="ADT_A09"))
    assert locations(enc) == [("Khoa Nội", "active")]


# -- patient-level triggers ------------------------------------------------------------------


def test_a29_delete_person_keeps_the_record_inactive() -> None:
    entries = mapped(adt("A29", PID, structure="ADT_A21"))
    assert set(entries) == {"Patient"}  # no DELETE, no Encounter
    (entry,) = entries["Patient"]
    assert entry["request"]["method"] == "PUT"
    assert entry["resource"]["active"] is False
    assert entry["resource"]["name"][0]["family"] == "Phạm"


def test_a47_change_identifier_list_merges_the_prior_number_into_the_new_one() -> None:
    pid = PID.replace("BN000456", "BN100456")
    entries = mapped(adt("A47", pid, "MRG|BN000456^^^BVDK_HN^MR", structure="ADT_A30"))
    (patient,) = entries["Patient"]
    assert patient["request"]["method"] == "POST"  # created under the new number only if unknown
    assert any(i["value"] == "BN100456" for i in patient["resource"]["identifier"])
    (merge,) = entries["Parameters"]
    assert merge["request"] == {"method": "POST", "url": "Patient/$merge"}
    params = {p["name"]: p["valueIdentifier"]["value"] for p in merge["resource"]["parameter"]}
    assert params == {"source-patient-identifier": "BN000456", "target-patient-identifier": "BN100456"}


def test_a45_move_visit_repoints_the_encounter_to_the_new_patient() -> None:
    pid = PID.replace("BN000456", "BN100456")
    raw = adt("A45", pid, f"MRG|BN000456^^^BVDK_HN^MR||||{VISIT}^^^BVDK_HN", pv1(), structure="ADT_A45")
    entries = mapped(raw)
    (patient,) = entries["Patient"]
    (entry,) = entries["Encounter"]
    assert entry["request"]["method"] == "PUT"
    enc = entry["resource"]
    assert enc["subject"] == {"reference": patient["fullUrl"]}
    assert enc["identifier"][0] == {"system": visit_system("BVDK_HN"), "value": VISIT}
    assert enc["status"] == "in-progress"


def test_a45_takes_the_visit_number_from_mrg5_when_pv1_19_is_empty() -> None:
    raw = adt("A45", PID, f"MRG|BN000999^^^BVDK_HN^MR||||{VISIT}^^^BVDK_HN", pv1(f19=""), structure="ADT_A45")
    assert encounter(raw)["identifier"][0]["value"] == VISIT


def test_a45_of_a_discharged_visit_stays_finished() -> None:
    raw = adt("A45", PID, "MRG|BN000999^^^BVDK_HN^MR", pv1(f45="20261123100000+0700"), structure="ADT_A45")
    assert encounter(raw)["status"] == "finished"


# -- SIU -------------------------------------------------------------------------------------


def test_s16_discontinue_cancels_the_appointment() -> None:
    lines = [
        MSH.format(event="SIU^S16^SIU_S12", control="NK0000130").replace("BVDK_HN", "NK_SMILE_Q1"),
        "SCH|LH000501^NK_SMILE_Q1|LH000501^NK_SMILE_Q1|||||TAIKHAM^Tái khám niềng răng^LOCAL|"
        "ROUTINE^Routine^HL70276|30|MIN^Phút",
        "TQ1|1||||||20261126140000+0700|20261126143000+0700",
        "PID|1||KH20261118-07^^^NK_SMILE_Q1^MR||Võ^Ánh^Ngọc^^^^L||20010225|F",
        "AIP|1||TN03^Hồ^Mai",
    ]
    (entry,) = mapped(("\r".join(lines) + "\r").encode("utf-8"))["Appointment"]
    assert entry["resource"]["status"] == "cancelled"
    assert entry["resource"]["start"] == "2026-11-26T14:00:00+07:00"


# -- ignored and refused ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "words"),
    [
        ("ADT^A60^ADT_A60", "allergies"),
        ("ADT^A41^ADT_A39", "accounts"),
        ("ADT^A17^ADT_A17", "swap"),
        ("SIU^S23^SIU_S12", "slots"),
    ],
)
def test_other_table_0003_triggers_are_ignored_with_a_reason(event: str, words: str) -> None:
    raw = (MSH.format(event=event, control="HIS900001") + "\r" + PID + "\r").encode("utf-8")
    msg = parse_message(raw)
    with pytest.raises(MessageIgnored) as info:
        map_message(msg)
    assert words in info.value.message.lower()
    assert info.value.location == "MSH-9.2"
    ack = build_ack(msg.header, ack_code=info.value.hl7_ack, error=info.value, control_id="A1").decode()
    msa, err = ack.split("\r")[1:3]
    assert msa == "MSA|AA|HIS900001"
    fields = err.split("|")
    assert fields[3] == "0^Message accepted^HL70357"
    assert fields[4] == "I"  # table 0516: information, not an error
    assert words in fields[8].lower()


def test_a_code_outside_table_0003_is_still_refused() -> None:
    raw = adt("A99", PID, pv1())
    with pytest.raises(UnsupportedMessageType) as info:
        map_message(parse_message(raw))
    assert (info.value.hl7_ack, info.value.hl7_error_code) == ("AR", "201")


def test_every_trigger_is_mapped_or_has_a_reason_and_the_docs_list_them_all() -> None:
    rows = catalogue()
    assert len(rows) == len(ADT_EVENTS) + len(SIU_EVENTS)
    ignored = {key for key, _, action in rows if action != "mapped"}
    assert ignored == set(IGNORE_REASONS)
    documented = dict(
        re.findall(r"^\| `((?:ADT|SIU)\^[AS]\d\d)` \|[^|]*\| ([^|]+) \|", DOCS.read_text(), re.M)
    )
    assert set(documented) == {key for key, _, _ in rows}
    for key, _, action in rows:
        assert (documented[key].strip() == "mapped") == (action == "mapped"), key


def test_sender_ignore_setting_matches_types_and_triggers_per_sender() -> None:
    from pydantic import ValidationError

    from common import Settings

    hl7 = Settings.from_env({"CAREBRIDGE_HL7_SENDER_IGNORE": "HIS^FAC=ADT^A60|SIU^S23,OTHER=oru"}).hl7
    assert hl7.ignored_for("HIS", "FAC", "ADT", "A60")
    assert not hl7.ignored_for("HIS", "FAC", "ADT", "A08")
    assert hl7.ignored_for("HIS", "FAC", "SIU", "S23")
    assert not hl7.ignored_for("HIS", "KHAC", "ADT", "A60")  # APP^FAC is not APP
    assert hl7.ignored_for("OTHER", "ANY", "ORU", "R01")
    assert not hl7.ignored_for("THIRD", "FAC", "ORU", "R01")
    with pytest.raises(ValidationError):
        Settings.from_env({"CAREBRIDGE_HL7_SENDER_IGNORE": "HIS=ADT^A60^ADT_A60"})
