"""A reused MSH-10 is not a duplicate delivery (issue #15 item 1), over MLLP on SQLite and PostgreSQL.

A duplicate delivery is the same sender (MSH-3, MSH-4), MSH-10 *and* content
(MSH-7 left out, segment terminators normalised); it gets the original ACK and
no second row.  The same sender and MSH-10 with other content -- a HIS whose
counter restarted -- is journaled as its own row and processed, or refused with
AE and ERR 205 at MSH-10 (``CAREBRIDGE_HL7_CONTROL_ID_REUSE``, per sender
``CAREBRIDGE_HL7_SENDER_CONTROL_ID_REUSE``); counted and logged either way.
The messages are the ADT^A04/A08 samples (HL7 v2.5 ADT_A01 structure) of
tests/fixtures/hl7v2, with the A08 carrying the A04's control id.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import select

from common.identifiers import mrn_system
from fhir_store import journal
from fhir_store.schema import hl7_journal
from gateway.mllp.client import MllpClient, parse_ack
from tests.mllp.conftest import RunningServer, ServeProcess, sample

A04 = sample("adt_a04_register_outpatient")  # MSH-10 HIS000001, phone 0912345678
# The same A04 resent after the HIS restamped its header (MSH-7) and with LF segment ends.
A04_RETRY = A04.replace(b"20261120083000+0700||ADT^A04", b"20261120090500+0700||ADT^A04", 1).replace(
    b"\r", b"\n"
)
# The HIS restarted and its counter began again: an A08 (new phone 0977888999) with the A04's MSH-10.
A08_REUSED = sample("adt_a08_update_patient").replace(b"|HIS000003|", b"|HIS000001|", 1)


def rows(server: RunningServer) -> list[tuple[str, str, bool]]:
    """(status, ack code, reused) of every journal row, oldest first."""
    j = hl7_journal
    stmt = select(j.c.status, j.c.ack_code, j.c.control_id_reused).order_by(j.c.id)
    with server.runtime.engine.connect() as conn:
        return [(str(r[0]), str(r[1]), bool(r[2])) for r in conn.execute(stmt)]


def last_id(server: RunningServer) -> int:
    """The newest row (a rolled-back insert may have used an id on PostgreSQL)."""
    with server.runtime.engine.connect() as conn:
        return int(
            conn.execute(select(hl7_journal.c.id).order_by(hl7_journal.c.id.desc()).limit(1)).scalar_one()
        )


def phone(server: RunningServer) -> str:
    patient = server.owner("Patient", mrn_system("BVDK_HN"), "BN000123")
    assert patient is not None
    return str(patient["telecom"][0]["value"])


def test_same_content_resent_gets_the_original_ack_and_one_row(mllp: RunningServer) -> None:
    with MllpClient("127.0.0.1", mllp.port) as client:
        first = client.request(A04)
        retry = client.request(A04_RETRY)
    assert first is not None and retry == first  # byte for byte: the stored ACK
    assert parse_ack(first).code == "AA" and parse_ack(first).control_id == "HIS000001"
    assert rows(mllp) == [("processed", "AA", False)]
    assert mllp.server.ingestor.metrics.reused_snapshot() == {}


def test_same_id_other_content_is_journaled_and_processed(mllp: RunningServer) -> None:
    with MllpClient("127.0.0.1", mllp.port) as client:
        first = client.request(A04)
        second = client.request(A08_REUSED)
        again = client.request(A08_REUSED)  # a retry of the reused message is its duplicate
    assert first is not None and second is not None
    ack = parse_ack(second)
    assert (ack.code, ack.control_id) == ("AA", "HIS000001")
    assert b"ACK^A08" in second and second != first  # its own ACK, not the A04's
    assert again == second
    assert rows(mllp) == [("processed", "AA", False), ("processed", "AA", True)]
    assert phone(mllp) == "+84977888999"  # the A08 was applied
    entry = journal.load(mllp.runtime.engine, last_id(mllp), mllp.runtime.store.cipher)
    assert entry is not None and entry.raw == A08_REUSED and entry.control_id_reused
    assert mllp.server.ingestor.metrics.reused_snapshot() == {"process": 1}


def test_refuse_mode_answers_ae_with_err_205(start_server: Callable[..., RunningServer]) -> None:
    mllp = start_server(hl7_control_id_reuse="refuse")
    with MllpClient("127.0.0.1", mllp.port) as client:
        assert client.request(A04) is not None
        refused = client.request(A08_REUSED)
        again = client.request(A08_REUSED)
    assert refused is not None and again == refused
    ack = parse_ack(refused)
    assert (ack.code, ack.control_id) == ("AE", "HIS000001")
    assert "control id was already used" in ack.text
    err = [line for line in refused.split(b"\r") if line.startswith(b"ERR")]
    assert err and b"MSH^1^10" in err[0] and b"205" in err[0]
    assert rows(mllp) == [("processed", "AA", False), ("failed", "AE", True)]
    assert phone(mllp) == "+84912345678"  # not applied
    assert mllp.server.ingestor.metrics.reused_snapshot() == {"refuse": 1}
    # The bytes are journaled, so an operator can still apply them on purpose.
    assert mllp.server.ingestor.replay(last_id(mllp)).ack_code == "AA"
    assert phone(mllp) == "+84977888999"


def test_per_sender_option_overrides_the_default(start_server: Callable[..., RunningServer]) -> None:
    mllp = start_server(hl7_sender_control_id_reuse="HIS_VN^BVDK_HN=refuse,LAB_VN=process")
    other = A04.replace(b"|HIS_VN|BVDK_HN|", b"|HIS_KHAC|BVDK_HN|", 1)
    other_reused = A08_REUSED.replace(b"|HIS_VN|BVDK_HN|", b"|HIS_KHAC|BVDK_HN|", 1)
    with MllpClient("127.0.0.1", mllp.port) as client:
        codes = [parse_ack(client.request(m) or b"").code for m in (A04, A08_REUSED, other, other_reused)]
    assert codes == ["AA", "AE", "AA", "AA"]
    assert mllp.server.ingestor.metrics.reused_snapshot() == {"refuse": 1, "process": 1}


def test_enhanced_mode_commit_ack_then_ae_for_a_refused_reuse(
    start_server: Callable[..., RunningServer],
) -> None:
    mllp = start_server(hl7_strict=True, hl7_control_id_reuse="refuse")
    enhanced = A08_REUSED.replace(b"|P|2.5|||AL|NE|", b"|P|2.5|||AL|AL|", 1)
    with MllpClient("127.0.0.1", mllp.port) as client:
        client.request(A04.replace(b"|P|2.5|||AL|NE|", b"|P|2.5|||AL|AL|", 1))
        client.read_frame(20)  # the A04's application ACK
        commit = client.request(enhanced)
        application = client.read_frame(20)
    assert commit is not None and parse_ack(commit).code == "CA"
    assert application is not None and parse_ack(application).code == "AE"
    assert rows(mllp)[-1] == ("failed", "AE", True)


def test_reuse_is_logged_as_a_warning_without_patient_data(
    serve: Callable[..., ServeProcess], database_url: str
) -> None:
    server = serve(database_url)
    with MllpClient("127.0.0.1", server.port) as client:
        client.request(A04)
        client.request(A08_REUSED)
    server.stop()
    warnings = [
        e for e in server.log_events() if e.get("event") == "hl7 control id reused with other content"
    ]
    assert len(warnings) == 1
    warning = warnings[0]
    assert warning["level"] == "warning" and warning["action"] == "process"
    assert warning["control_id"] == "HIS000001" and warning["sending_application"] == "HIS_VN"
    line = str(warning)
    for phi in ("Nguyễn", "0977888999", "+84977888999", "079085001234", "BN000123", "Trần Hưng Đạo"):
        assert phi not in line
