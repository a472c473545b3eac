"""Every ADT/SIU trigger gets an application ACK (issue #15 item 6), over MLLP on SQLite and PostgreSQL.

A trigger of HL7 table 0003 with nothing to store is answered AA (ERR severity I,
the reason in ERR-8) and journaled ``ignored`` with the reason; a sender's
``CAREBRIDGE_HL7_SENDER_IGNORE`` list turns a type carebridge refuses (ORU^R01)
into AA/ignored for that sender only; without it, AR stays.  Newly mapped
triggers change the stored visit as docs/hl7-mapping.md says.  Messages are
v2.5.1 ADT structures with Vietnamese content.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from common import mrn_system, visit_system
from fhir_store.schema import hl7_journal
from gateway.mllp.client import MllpClient, parse_ack
from tests.mllp.conftest import RunningServer, sample

MSH = "MSH|^~\\&|HIS_VN|BVDK_HN|FHIRGATE|CRM_CSKH|{ts}||ADT^{trigger}^{structure}|{control}|P|2.5.1|||AL|NE|VNM|UNICODE UTF-8"
PID = "PID|1||BN000456^^^BVDK_HN^MR||Phạm^Minh^Thị^^^^L||19900704|F|||45 Nguyễn Trãi^^Phường Thanh Xuân^Hà Nội^100000^VNM^H"
A60 = (
    MSH.format(ts="20261125083000+0700", trigger="A60", structure="ADT_A60", control="HIS0060001")
    + "\rEVN|A60|20261125083000+0700\r"
    + PID
    + "\rIAM|1|DA|PCN^Penicillin^L|SV|HIVES^Nổi mề đay^L|A\r"
).encode("utf-8")
ORU = sample("bad_unsupported_trigger")  # ORU^R01 from HIS_VN^BVDK_HN, MSH-10 HIS009003


def visit(trigger: str, control: str, ts: str, *, pv1_45: str = "", structure: str = "ADT_A01") -> bytes:
    pv1 = ["PV1", "1", "I", "NOI^P305^B2^BVDK_HN^^^^^Khoa Nội", *[""] * 15, "V2026112500001"]
    pv1 += [""] * (44 - len(pv1)) + ["20261125080000+0700", pv1_45]
    lines = [
        MSH.format(ts=ts, trigger=trigger, structure=structure, control=control),
        f"EVN|{trigger}|{ts}",
        PID,
        "|".join(pv1),
    ]
    return ("\r".join(lines) + "\r").encode("utf-8")


def rows(server: RunningServer) -> list[tuple[str, str, str | None]]:
    """(status, ack code, error) of every journal row, oldest first."""
    j = hl7_journal
    with server.runtime.engine.connect() as conn:
        result = conn.execute(select(j.c.status, j.c.ack_code, j.c.error).order_by(j.c.id))
        return [(str(r[0]), str(r[1]), r[2]) for r in result]


def test_an_ignored_trigger_is_answered_aa_and_journaled_ignored(mllp: RunningServer) -> None:
    with MllpClient("127.0.0.1", mllp.port) as client:
        answer = client.request(A60)
        again = client.request(A60)
    assert answer is not None and again == answer  # a resend gets the stored ACK
    ack = parse_ack(answer)
    assert (ack.code, ack.control_id) == ("AA", "HIS0060001")
    assert "allergies are not stored" in ack.text
    assert b"|0^Message accepted^HL70357|I|" in answer
    ((status, code, error),) = rows(mllp)
    assert (status, code) == ("ignored", "AA")
    assert error is not None and "ADT^A60" in error and "allergies are not stored" in error
    assert mllp.owner("Patient", mrn_system("BVDK_HN"), "BN000456") is None  # nothing applied


def test_sender_ignore_list_turns_an_unhandled_type_into_aa(
    start_server: Callable[..., RunningServer],
) -> None:
    mllp = start_server(hl7_sender_ignore="HIS_VN^BVDK_HN=ORU|ADT^A08,LAB_VN=ORU^R01")
    other = ORU.replace(b"|HIS_VN|BVDK_HN|", b"|HIS_KHAC|BVDK_HN|", 1)
    with MllpClient("127.0.0.1", mllp.port) as client:
        ignored = client.request(ORU)
        refused = client.request(other)  # not on this sender's list: still AR
        update = client.request(sample("adt_a08_update_patient"))  # listed trigger: not applied
    assert ignored is not None and refused is not None and update is not None
    assert parse_ack(ignored).code == "AA" and "CAREBRIDGE_HL7_SENDER_IGNORE" in parse_ack(ignored).text
    assert parse_ack(refused).code == "AR"
    assert parse_ack(update).code == "AA"
    statuses = [(status, code) for status, code, _ in rows(mllp)]
    assert statuses == [("ignored", "AA"), ("rejected", "AR"), ("ignored", "AA")]
    assert "ignore list of sender HIS_VN^BVDK_HN" in (rows(mllp)[0][2] or "")
    assert mllp.owner("Patient", mrn_system("BVDK_HN"), "BN000123") is None


def test_an_unhandled_type_without_the_setting_is_still_refused(mllp: RunningServer) -> None:
    with MllpClient("127.0.0.1", mllp.port) as client:
        answer = client.request(ORU)
    assert answer is not None
    assert parse_ack(answer).code == "AR" and b"200^Unsupported message type" in answer
    assert [(status, code) for status, code, _ in rows(mllp)] == [("rejected", "AR")]


def test_pending_admit_then_cancel_and_pending_discharge_in_the_store(
    start_server: Callable[..., RunningServer],
) -> None:
    mllp = start_server()
    key = (visit_system("BVDK_HN"), "V2026112500001")
    with MllpClient("127.0.0.1", mllp.port) as client:
        codes = [parse_ack(client.request(visit("A14", "HIS0014001", "20261125070000+0700")) or b"").code]
        planned = mllp.owner("Encounter", *key)
        codes.append(parse_ack(client.request(visit("A27", "HIS0027001", "20261125071000+0700")) or b"").code)
        cancelled = mllp.owner("Encounter", *key)
        codes.append(parse_ack(client.request(visit("A01", "HIS0001001", "20261125080000+0700")) or b"").code)
        pending = visit("A16", "HIS0016001", "20261125090000+0700", pv1_45="20261126100000+0700")
        codes.append(parse_ack(client.request(pending) or b"").code)
    assert codes == ["AA", "AA", "AA", "AA"]
    assert planned is not None and planned["status"] == "planned"
    assert cancelled is not None and cancelled["status"] == "cancelled"
    admitted = mllp.owner("Encounter", *key)
    assert admitted is not None and admitted["status"] == "in-progress"  # A16 never finishes it
    assert "end" not in admitted["period"]
    assert [status for status, _, _ in rows(mllp)] == ["processed"] * 4


def test_a29_keeps_the_patient_inactive(mllp: RunningServer) -> None:
    a29 = (
        MSH.format(ts="20261125100000+0700", trigger="A29", structure="ADT_A21", control="HIS0029001")
        + "\rEVN|A29|20261125100000+0700\r"
        + PID
        + "\r"
    ).encode("utf-8")
    with MllpClient("127.0.0.1", mllp.port) as client:
        assert (
            parse_ack(client.request(visit("A01", "HIS0001002", "20261125080000+0700")) or b"").code == "AA"
        )
        assert parse_ack(client.request(a29) or b"").code == "AA"
    patient = mllp.owner("Patient", mrn_system("BVDK_HN"), "BN000456")
    assert patient is not None and patient["active"] is False  # kept, not deleted
    assert mllp.owner("Encounter", visit_system("BVDK_HN"), "V2026112500001") is not None


def test_enhanced_mode_commit_ack_then_aa_for_an_ignored_trigger(
    start_server: Callable[..., RunningServer],
) -> None:
    mllp = start_server(hl7_strict=True)
    with MllpClient("127.0.0.1", mllp.port) as client:
        commit = client.request(A60.replace(b"|||AL|NE|", b"|||AL|AL|", 1))
        application = client.read_frame(20)
    assert commit is not None and parse_ack(commit).code == "CA"
    assert application is not None and parse_ack(application).code == "AA"
    assert [(status, code) for status, code, _ in rows(mllp)] == [("ignored", "AA")]
