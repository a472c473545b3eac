"""HL7 edge cases (issue #17 item 6) over real TCP, on SQLite and PostgreSQL.

Each message is journaled and answered AR with an ERR that names the field
(ERR-2) and the rule (ERR-3, HL7 table 0357; ERR-8 the text):

* a NUL in MSH-10 (it used to be answered "please retry" for ever on PostgreSQL);
* an empty MSH-10 (it used to get AA with an empty MSA-2, so its duplicates went unseen);
* a field repeated more often than ``CAREBRIDGE_HL7_MAX_REPETITIONS`` and a message
  with more segments than ``CAREBRIDGE_HL7_MAX_SEGMENTS`` (10,000 PID-3 repetitions
  used to give AE 207 "internal error" after seconds);
* a message over ``CAREBRIDGE_MLLP_MAX_MESSAGE_BYTES`` (it used to carry code 207).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from common import mrn_system
from fhir_store import journal
from fhir_store.schema import hl7_journal
from gateway.mllp.client import MllpClient, parse_ack
from tests.mllp.conftest import RunningServer, a04


def err_fields(ack: bytes) -> tuple[str, str, str]:
    """(ERR-2 location, ERR-3.1 code, ERR-8 text) of a v2.5 ACK."""
    for line in ack.decode("utf-8", errors="replace").split("\r"):
        parts = line.split("|")
        if parts[0] == "ERR":
            return parts[2], parts[3].split("^")[0], parts[8]
    raise AssertionError(f"no ERR segment in {ack!r}")


def journal_rows(server: RunningServer) -> list[tuple[int, str, str, str]]:
    """(id, status, ack code, control id) of every journal row, oldest first."""
    j = hl7_journal
    stmt = select(j.c.id, j.c.status, j.c.ack_code, j.c.control_id).order_by(j.c.id)
    with server.runtime.engine.connect() as conn:
        return [(int(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in conn.execute(stmt)]


def send(server: RunningServer, raw: bytes) -> bytes:
    with MllpClient("127.0.0.1", server.port, timeout=30) as client:
        answer = client.request(raw)
    assert answer is not None
    return answer


def test_nul_in_msh10_is_journaled_and_refused_at_msh10(mllp: RunningServer) -> None:
    raw = a04("NUL\x00042", "BN-EDGE-1")
    first = send(mllp, raw)
    ack = parse_ack(first)
    assert ack.code == "AR"
    location, code, text = err_fields(first)
    assert location == "MSH^1^10" and code == "102"
    assert "NUL" in text and "MSH-10" in text
    rows = journal_rows(mllp)
    assert [(status, code) for _, status, code, _ in rows] == [("rejected", "AR")]
    assert rows[0][3] == "NUL\ufffd042"  # the describing column; the sealed raw keeps the byte
    entry = journal.load(mllp.runtime.engine, rows[0][0], mllp.runtime.store.cipher)
    assert entry is not None and entry.raw == raw
    # the sender's retry is a duplicate delivery: the stored AR again, not "please retry"
    assert send(mllp, raw) == first
    assert len(journal_rows(mllp)) == 1
    assert mllp.owner("Patient", mrn_system("BVDK_HN"), "BN-EDGE-1") is None


def test_nul_elsewhere_is_refused_naming_its_field(mllp: RunningServer) -> None:
    raw = a04("NULPID01", "BN-EDGE-2").replace("Nguyễn".encode(), "Ngu\x00yễn".encode())
    answer = send(mllp, raw)
    assert parse_ack(answer).code == "AR" and parse_ack(answer).control_id == "NULPID01"
    location, code, _ = err_fields(answer)
    assert (location, code) == ("PID^1^5", "102")
    assert [(s, c) for _, s, c, _ in journal_rows(mllp)] == [("rejected", "AR")]


def test_empty_msh10_is_refused_as_required_field_missing(mllp: RunningServer) -> None:
    raw = a04("", "BN-EDGE-3")
    first = send(mllp, raw)
    ack = parse_ack(first)
    assert ack.code == "AR" and ack.control_id == ""
    location, code, text = err_fields(first)
    assert (location, code) == ("MSH^1^10", "101")
    assert "MSH-10" in text
    assert "Required field missing" in first.decode()
    second = send(mllp, raw)  # nothing to detect duplicates by: journaled again, refused again
    assert parse_ack(second).code == "AR"
    rows = journal_rows(mllp)
    assert [(s, c) for _, s, c, _ in rows] == [("rejected", "AR"), ("rejected", "AR")]
    assert mllp.owner("Patient", mrn_system("BVDK_HN"), "BN-EDGE-3") is None


def test_too_many_repetitions_are_refused_early(mllp: RunningServer) -> None:
    many = "~".join(f"ID{i:05d}^^^BVDK_HN^PI" for i in range(10_000))
    raw = a04("REPS0001", "BN-EDGE-4").replace(b"^^^BVDK_HN^MR|", f"^^^BVDK_HN^MR~{many}|".encode())
    answer = send(mllp, raw)
    ack = parse_ack(answer)
    assert (ack.code, ack.control_id) == ("AR", "REPS0001")
    location, code, text = err_fields(answer)
    assert (location, code) == ("PID^1^3", "104")
    assert "10001 repetitions" in text and "100" in text
    assert [(s, c) for _, s, c, _ in journal_rows(mllp)] == [("rejected", "AR")]
    assert mllp.owner("Patient", mrn_system("BVDK_HN"), "BN-EDGE-4") is None


def test_repetition_and_segment_limits_are_settings(start_server: Callable[..., RunningServer]) -> None:
    server = start_server(hl7_max_repetitions=3, hl7_max_segments=4)
    three = a04("REPS0002", "BN-EDGE-5").replace(b"^^^BVDK_HN^MR|", b"^^^BVDK_HN^MR~A^^^X^PI~B^^^X^PI|")
    assert parse_ack(send(server, three)).code == "AA"
    four = a04("REPS0003", "BN-EDGE-6").replace(
        b"^^^BVDK_HN^MR|", b"^^^BVDK_HN^MR~A^^^X^PI~B^^^X^PI~C^^^X^PI|"
    )
    assert parse_ack(send(server, four)).code == "AR"
    five_segments = a04("SEGS0001", "BN-EDGE-7") + b"PV1|1|O\rZXX|1\r"
    answer = send(server, five_segments)
    assert parse_ack(answer).code == "AR"
    location, code, text = err_fields(answer)
    assert (location, code) == ("", "100")
    assert "5 segments" in text and "4" in text


def test_oversized_message_is_a_size_error_not_internal(start_server: Callable[..., RunningServer]) -> None:
    server = start_server(mllp_max_message_bytes=4096)
    raw = a04("BIG00001", "BN-EDGE-8", extra="") + b"NTE|1||" + b"x" * 8000 + b"\r"
    answer = send(server, raw)
    ack = parse_ack(answer)
    assert (ack.code, ack.control_id) == ("AR", "BIG00001")
    _, code, text = err_fields(answer)
    assert code == "104" and "Value too long" in answer.decode()
    assert "4096 bytes" in text
    assert [(s, c) for _, s, c, _ in journal_rows(server)] == [("rejected", "AR")]
