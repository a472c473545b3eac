"""The listener as a TCP peer sees it: framing over real sockets, limits, timeouts, concurrency, ACK modes."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from common.identifiers import mrn_system
from fhir_store import journal
from gateway.mllp.client import MllpClient, parse_ack
from gateway.mllp.framing import frame
from tests.mllp.conftest import RunningServer, a04, sample


def read_acks(client: MllpClient, count: int) -> list[str]:
    codes = []
    for _ in range(count):
        answer = client.read_frame(20)
        assert answer is not None
        ack = parse_ack(answer)
        codes.append(f"{ack.code} {ack.control_id}")
    return codes


def test_split_reads_and_several_messages_in_one_write(mllp: RunningServer) -> None:
    with MllpClient("127.0.0.1", mllp.port) as client:
        data = frame(a04("SPLIT1", "S-1"))
        for i in range(len(data)):  # one byte per TCP segment
            client.send_raw(data[i : i + 1])
            if i % 50 == 0:
                time.sleep(0.001)
        assert read_acks(client, 1) == ["AA SPLIT1"]
        client.send_raw(b"".join(frame(a04(f"MULTI{i}", f"M-{i}")) for i in range(5)))
        assert read_acks(client, 5) == [f"AA MULTI{i}" for i in range(5)]


def test_oversized_message_gets_ar_and_connection_stays_usable(
    start_server: Callable[..., RunningServer],
) -> None:
    mllp = start_server(mllp_max_message_bytes=2048)
    big = a04("BIG1", "B-1") + b"NTE|1||" + "Bệnh sử dài ".encode() * 1000 + b"\r"
    with MllpClient("127.0.0.1", mllp.port) as client:
        ack = parse_ack(client.request(big) or b"")
        assert ack.code == "AR" and "exceeds the limit of 2048 bytes" in ack.text
        assert ack.control_id == "BIG1"  # the head still names the message
        assert client.exchange(a04("SMALL1", "B-2")) is not None
    counts = journal.count_by_status(mllp.runtime.engine)
    assert counts == {"rejected": 1, "processed": 1}


def test_idle_connection_is_closed(start_server: Callable[..., RunningServer]) -> None:
    mllp = start_server(mllp_idle_timeout_s=0.3)
    with socket.create_connection(("127.0.0.1", mllp.port), timeout=5) as sock:
        started = time.monotonic()
        assert sock.recv(10) == b""  # server closed it
        assert 0.2 < time.monotonic() - started < 4
    with MllpClient("127.0.0.1", mllp.port) as client:
        assert client.exchange(a04("AFTERIDLE", "I-1")) is not None


def test_broken_frames_do_not_hurt_other_connections(mllp: RunningServer) -> None:
    with MllpClient("127.0.0.1", mllp.port) as good, MllpClient("127.0.0.1", mllp.port) as bad:
        bad.send_raw(b"GET / HTTP/1.1\r\n\r\n\x0b\x00\xff\xfe broken \x0b half")
        ack = good.exchange(a04("ISO1", "ISO-1"))
        assert ack is not None and ack.code == "AA"
        bad.send_raw(b"\x1c\r")  # ends the half frame: garbage gets an AR, not a crash
        assert parse_ack(bad.read_frame(10) or b"").code == "AR"
        bad.sock.close()
        ack = good.exchange(a04("ISO2", "ISO-2"))
        assert ack is not None and ack.code == "AA"


def test_many_concurrent_connections(mllp: RunningServer) -> None:
    def sender(n: int) -> list[str]:
        with MllpClient("127.0.0.1", mllp.port) as client:
            return [
                (client.exchange(a04(f"C{n}-{i}", f"CONC-{n}-{i}")) or parse_ack(b"")).code for i in range(5)
            ]

    with ThreadPoolExecutor(24) as pool:
        results = list(pool.map(sender, range(24)))
    assert all(codes == ["AA"] * 5 for codes in results)
    assert journal.count_by_status(mllp.runtime.engine) == {"processed": 120}


def test_one_patient_from_many_connections_keeps_arrival_order(mllp: RunningServer) -> None:
    """Updates for one MRN from parallel connections: the last one to arrive wins, versions are gap-free."""
    phones = [f"09123450{i:02d}" for i in range(12)]

    def send(i: int) -> None:
        with MllpClient("127.0.0.1", mllp.port) as client:
            msg = a04(f"ORD{i}", "ORDER-1").replace(b"0912345678", phones[i].encode())
            assert (client.exchange(msg) or parse_ack(b"")).code == "AA"

    with ThreadPoolExecutor(12) as pool:
        list(pool.map(send, range(12)))
    patient = mllp.owner("Patient", mrn_system("BVDK_HN"), "ORDER-1")
    assert patient is not None
    last = journal.load(mllp.runtime.engine, 12, mllp.runtime.store.cipher)
    assert last is not None
    last_phone = last.raw.split(b"|||||")[1].split(b"\r")[0].decode()
    assert patient["telecom"][0]["extension"][0]["valueString"] == last_phone
    assert patient["meta"]["versionId"] == "12"


def test_duplicate_delivery_returns_the_original_ack_and_writes_nothing(mllp: RunningServer) -> None:
    message = sample("adt_a04_register_outpatient")
    with MllpClient("127.0.0.1", mllp.port) as client:
        first = client.request(message)
        second = client.request(message)
        bad_first = client.request(sample("bad_missing_patient_id"))
        bad_second = client.request(sample("bad_missing_patient_id"))
    assert first is not None and first == second
    assert bad_first is not None and bad_first == bad_second
    assert journal.count_by_status(mllp.runtime.engine) == {"processed": 1, "failed": 1}
    patient = mllp.owner("Patient", mrn_system("BVDK_HN"), "BN000123")
    assert patient is not None and patient["meta"]["versionId"] == "1"


def test_enhanced_mode_strict_commit_then_application_ack(start_server: Callable[..., RunningServer]) -> None:
    mllp = start_server(hl7_strict=True)
    with MllpClient("127.0.0.1", mllp.port) as client:
        # MSH-15 AL, MSH-16 AL: CA after the journal commit, then AA.
        client.send(a04("ENH1", "E-1", extra="|||AL|AL"))
        assert read_acks(client, 2) == ["CA ENH1", "AA ENH1"]
        # MSH-15 AL, MSH-16 NE (the samples): only the commit ACK.
        client.send(sample("adt_a04_register_outpatient"))
        assert read_acks(client, 1) == ["CA HIS000001"]
        # MSH-15 NE, MSH-16 ER on an error: only the application ACK.
        client.send(sample("bad_missing_patient_id").replace(b"|||AL|NE|", b"|||NE|ER|"))
        assert read_acks(client, 1) == ["AE HIS009001"]
        # MSH-15 ER on an unsupported message: CR with the reason, no application ACK (NE).
        client.send(sample("bad_unsupported_trigger").replace(b"|||AL|NE|", b"|||ER|NE|"))
        answer = client.read_frame(10)
        assert answer is not None and parse_ack(answer).code == "CR" and "ORU" in parse_ack(answer).text
        assert client.read_frame(0.3) is None


def test_lenient_default_always_answers_with_the_application_ack(mllp: RunningServer) -> None:
    with MllpClient("127.0.0.1", mllp.port) as client:
        client.send(sample("adt_a04_register_outpatient"))  # AL/NE: one AA
        client.send(a04("LEN2", "L-2", extra="|||AL|AL"))  # both asked: CA then AA
        assert read_acks(client, 3) == ["AA HIS000001", "CA LEN2", "AA LEN2"]
        assert client.read_frame(0.3) is None
