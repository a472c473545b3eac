"""ADT^A40 with several PID/MRG groups and ADT^A37 (issue #15 item 5), mapped to one transaction.

HL7 v2.5.1 ch. 3.3.40: structure ADT_A39 repeats the PID/PD1/MRG/PV1 group, so
one A40 may retire several record numbers; ch. 3.3.37: ADT_A37 names the two
patients to unlink in two PID segments.
"""

from __future__ import annotations

import pytest

from common import RequiredFieldMissing, mrn_system
from mappers.hl7_message import parse_message
from mappers.router import map_message
from tests.mappers.helpers import validate_bundle

MSH = "MSH|^~\\&|HIS_VN|BVDK_HN|FHIRGATE|CRM_CSKH|20261125090000+0700||{type}|{ctl}|P|2.5.1|||AL|NE|VNM|UNICODE UTF-8"
PID = "PID|{n}||{mrn}^^^BVDK_HN^MR||Phạm^Hùng^Văn^^^^L||19791120|M"


def _message(*segments: str) -> bytes:
    return "\r".join(segments).encode() + b"\r"


def test_a40_with_two_pairs_merges_both_and_creates_the_survivor_once() -> None:
    message = _message(
        MSH.format(type="ADT^A40^ADT_A39", ctl="MRG1001"),
        "EVN|A40|20261125090000+0700",
        PID.format(n=1, mrn="BN600001"),
        "MRG|BN600002^^^BVDK_HN^MR",
        PID.format(n=2, mrn="BN600001"),
        "MRG|BN600003^^^BVDK_HN^MR",
    )
    bundle = map_message(parse_message(message)).bundle
    requests = [(e["request"]["method"], e["request"]["url"]) for e in bundle["entry"]]
    assert requests == [("POST", "Patient"), ("POST", "Patient/$merge"), ("POST", "Patient/$merge")]
    merges = [e["resource"]["parameter"] for e in bundle["entry"][1:]]
    system = mrn_system("BVDK_HN")
    assert [[p["valueIdentifier"]["value"] for p in params] for params in merges] == [
        ["BN600002", "BN600001"],
        ["BN600003", "BN600001"],
    ]
    assert all(p["valueIdentifier"]["system"] == system for params in merges for p in params)


def test_a40_pid_without_its_mrg_is_refused() -> None:
    message = _message(
        MSH.format(type="ADT^A40^ADT_A39", ctl="MRG1002"),
        "EVN|A40|20261125090000+0700",
        PID.format(n=1, mrn="BN600001"),
        "MRG|BN600002^^^BVDK_HN^MR",
        PID.format(n=2, mrn="BN600004"),
    )
    with pytest.raises(RequiredFieldMissing):
        map_message(parse_message(message))


def test_a37_names_both_patients_for_the_unlink() -> None:
    message = _message(
        MSH.format(type="ADT^A37^ADT_A37", ctl="MRG1003"),
        "EVN|A37|20261125090000+0700",
        PID.format(n=1, mrn="BN600001"),
        PID.format(n=2, mrn="BN600002"),
    )
    bundle = map_message(parse_message(message)).bundle
    (entry,) = bundle["entry"]
    assert entry["request"] == {"method": "POST", "url": "Patient/$unlink"}
    assert [(p["name"], p["valueIdentifier"]["value"]) for p in entry["resource"]["parameter"]] == [
        ("patient-identifier", "BN600001"),
        ("other-patient-identifier", "BN600002"),
    ]
    validate_bundle(bundle)


def test_a37_with_one_pid_is_refused() -> None:
    message = _message(
        MSH.format(type="ADT^A37^ADT_A37", ctl="MRG1004"),
        "EVN|A37|20261125090000+0700",
        PID.format(n=1, mrn="BN600001"),
    )
    with pytest.raises(RequiredFieldMissing):
        map_message(parse_message(message))
