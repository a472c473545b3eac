"""Issue #15 item 7 over MLLP: blank MSH-15/16 gets one ACK, an undecodable message an addressed AR."""

from __future__ import annotations

from fhir_store import journal
from gateway.mllp.client import MllpClient, parse_ack
from tests.mllp.conftest import RunningServer, sample


def test_whitespace_msh15_16_gets_only_the_application_ack(mllp: RunningServer) -> None:
    # The A04 sample with MSH-15/16 padded by a template ("AL|NE" replaced by blanks).
    padded = sample("adt_a04_register_outpatient").replace(b"|||AL|NE|VNM|", b"||| | |VNM|", 1)
    with MllpClient("127.0.0.1", mllp.port) as client:
        answer = client.request(padded)
        follow_up = client.request(sample("adt_a08_update_patient"))
    assert answer is not None and parse_ack(answer).code == "AA"
    # no stray second frame: the next answer belongs to the next message
    assert follow_up is not None and parse_ack(follow_up).control_id == "HIS000003"


def test_undecodable_message_ar_names_sender_and_control_id(mllp: RunningServer) -> None:
    utf8 = sample("adt_a04_register_outpatient")
    latin1 = utf8.replace("Lý".encode(), b"L\xfd")  # a street name typed in a Latin-1 (or cp1258) screen
    with MllpClient("127.0.0.1", mllp.port) as client:
        answer = client.request(latin1)  # Latin-1 bytes under MSH-18 UNICODE UTF-8
    assert answer is not None
    ack = parse_ack(answer)
    assert (ack.code, ack.control_id) == ("AR", "HIS000001")
    msh = answer.split(b"\r")[0].split(b"|")
    assert msh[4:6] == [b"HIS_VN", b"BVDK_HN"]
    assert b"102" in next(line for line in answer.split(b"\r") if line.startswith(b"ERR"))
    entry = journal.find_duplicate(
        mllp.runtime.engine, "HIS_VN", "BVDK_HN", "HIS000001", mllp.runtime.store.cipher
    )
    assert entry is not None and entry.status == journal.REJECTED and entry.raw == latin1
