"""End to end against a real ``carebridge serve`` process: the CLI contract and crash recovery."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from common.identifiers import mrn_system
from fhir_store import journal
from fhir_store.database import make_engine
from fhir_store.repository import FhirStore
from fhir_store.writer import find_identifier_owner
from gateway.mllp.client import MllpClient, parse_ack
from tests.mllp.conftest import BAD, CAREBRIDGE, FIXTURES, GOOD_ORDER, ServeProcess, a04, sample
from tests.support.settings import OPEN_MLLP_ENV, open_settings
from tests.support.store_keys import cipher_for


def run_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CAREBRIDGE_DATABASE_URL"}
    env.update(
        OPEN_MLLP_ENV
    )  # `hl7 replay` of messages from unregistered senders (tests/support/settings.py)
    return subprocess.run(
        [CAREBRIDGE, *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url, pool_size=2)
    yield eng
    eng.dispose()


def patient_versions(engine: Engine, mrn: str) -> tuple[int, str | None]:
    """(number of Patients holding the MRN, current versionId)."""
    with engine.connect() as conn:
        cipher = cipher_for(engine)
        owner = find_identifier_owner(conn, "Patient", mrn_system("BVDK_HN"), cipher.blind(mrn))
    if owner is None:
        return 0, None
    return 1, FhirStore(engine, cipher=cipher).read("Patient", owner).resource()["meta"]["versionId"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_hl7_send_cli_end_to_end(
    serve: Callable[..., ServeProcess], database_url: str, tmp_path: Path, engine: Engine
) -> None:
    server = serve(database_url)
    lf_copy = tmp_path / "a04_lf.hl7"  # LF line ends, as edited on most workstations
    lf_copy.write_bytes(sample("adt_a04_register_outpatient").replace(b"\r", b"\n"))
    two = tmp_path / "two_messages.hl7"  # CRLF and two messages in one file
    two.write_bytes((a04("TWO1", "TWO-1") + a04("TWO2", "TWO-2")).replace(b"\r", b"\r\n"))
    files = [str(FIXTURES / f"{n}.hl7") for n in GOOD_ORDER + BAD] + [str(lf_copy), str(two)]
    result = run_cli("hl7", "send", "--port", str(server.port), *files)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(files) + 1
    by_file = [line.split(" ", 3) for line in lines]
    for parts, name in zip(by_file, GOOD_ORDER, strict=False):
        assert parts[0].endswith(f"{name}.hl7") and parts[1] == "AA" and len(parts) == 3, parts
    bad = {Path(p[0]).stem: p for p in by_file[len(GOOD_ORDER) : len(GOOD_ORDER) + len(BAD)]}
    assert bad["bad_invalid_birthdate"][1:3] == ["AE", "HIS009002"]
    # the ERR text names the field and the rule, never the rejected value (issue #18 item 5)
    assert "impossible date (month 01-12" in bad["bad_invalid_birthdate"][3]
    assert "19851345" not in bad["bad_invalid_birthdate"][3]
    assert (
        bad["bad_missing_patient_id"][1:3] == ["AE", "HIS009001"]
        and "PID-3" in bad["bad_missing_patient_id"][3]
    )
    assert bad["bad_no_msh"][1:3] == ["AR", "-"] and "MSH" in bad["bad_no_msh"][3]
    assert bad["bad_unsupported_trigger"][1:3] == ["AR", "HIS009003"]
    assert lines[-3] == f"{lf_copy} AA HIS000001"  # duplicate of the first file: original AA
    assert lines[-2:] == [f"{two} AA TWO1", f"{two} AA TWO2"]
    counts = journal.count_by_status(engine)
    assert counts == {"processed": len(GOOD_ORDER) + 2, "failed": 2, "rejected": 2}


def test_hl7_send_cli_without_listener_exits_1(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connection refused
        result = run_cli("hl7", "send", "--port", str(port), str(FIXTURES / "adt_a28_add_person.hl7"))
    assert result.returncode == 1
    assert result.stdout.startswith(f"{FIXTURES / 'adt_a28_add_person.hl7'} - - no answer")


@pytest.mark.slow
@pytest.mark.durable  # kills `carebridge serve` mid-message: committed work must survive
def test_crash_between_commit_and_ack_loses_nothing(
    serve: Callable[..., ServeProcess], database_url: str, engine: Engine
) -> None:
    """Original mode: the journal row and the message's effects commit together, then the ACK.

    Killed after that commit and before the ACK, the sender gets nothing and retries; the
    retry is a duplicate delivery answered with the stored AA, and nothing is applied twice.
    """
    message = a04("CRASH0", "CRASH-0")
    doomed = serve(database_url, crash_after_journal=True)
    with MllpClient("127.0.0.1", doomed.port, timeout=20) as client:
        try:
            answer = client.request(message)
        except OSError:
            answer = None
    assert answer is None  # no ACK: the sender must retry
    assert doomed.proc.wait(20) == 86
    (row,) = [journal.load(engine, 1, cipher_for(engine))]
    assert row is not None and row.status == "processed" and row.raw == message
    assert patient_versions(engine, "CRASH-0") == (1, "1")

    restarted = serve(database_url)
    with MllpClient("127.0.0.1", restarted.port, timeout=20) as client:
        retry = client.request(message)
        again = client.request(message)
    assert retry is not None and parse_ack(retry).code == "AA" and retry == again == row.ack
    assert patient_versions(engine, "CRASH-0") == (1, "1")
    assert journal.count_by_status(engine) == {"processed": 1}
    restarted.stop()


@pytest.mark.slow
@pytest.mark.durable  # kills `carebridge serve` mid-message: committed work must survive
def test_crash_between_journal_commit_and_commit_ack_loses_nothing(
    serve: Callable[..., ServeProcess], database_url: str, engine: Engine
) -> None:
    """Enhanced mode (MSH-15/16 = AL): the journal commits first, then CA, then the work and AA."""
    enhanced = "|||AL|AL"
    message = a04("CRASH1", "CRASH-1", extra=enhanced)
    doomed = serve(database_url, crash_after_journal=True)
    with MllpClient("127.0.0.1", doomed.port, timeout=20) as client:
        try:
            answer = client.request(message)
        except OSError:
            answer = None
    assert answer is None  # no ACK: the sender must retry
    assert doomed.proc.wait(20) == 86
    (row,) = [journal.load(engine, 1, cipher_for(engine))]
    assert row is not None and row.status == "received" and row.raw == message
    assert patient_versions(engine, "CRASH-1") == (0, None)

    restarted = serve(database_url)
    with MllpClient("127.0.0.1", restarted.port, timeout=20) as client:
        retry = client.exchange(message)
        again = client.exchange(message)
    assert retry is not None and retry.code == "AA" and again is not None and again.code == "AA"
    assert retry.raw == again.raw  # the stored AA, sent again
    assert patient_versions(engine, "CRASH-1") == (1, "1")
    assert journal.count_by_status(engine) == {"processed": 1}
    restarted.stop()

    # Second crash, recovered by `carebridge hl7 replay` before the sender retries.
    second = a04("CRASH2", "CRASH-2", extra=enhanced)
    doomed = serve(database_url, crash_after_journal=True)
    with MllpClient("127.0.0.1", doomed.port, timeout=20) as client, contextlib.suppress(OSError):
        client.request(second)
    assert doomed.proc.wait(20) == 86
    result = run_cli("hl7", "replay", "--failed", "--stale-after", "0", "--database-url", database_url)
    assert result.returncode == 0, result.stdout + result.stderr
    entry = journal.find_duplicate(engine, "HIS_VN", "BVDK_HN", "CRASH2", cipher_for(engine))
    assert entry is not None and entry.status == "processed"
    assert result.stdout.splitlines() == [f"{entry.id} processed AA"]
    restarted = serve(database_url)
    with MllpClient("127.0.0.1", restarted.port, timeout=20) as client:
        final = client.exchange(second)
    assert final is not None and final.code == "AA"
    assert patient_versions(engine, "CRASH-2") == (1, "1")
    assert journal.count_by_status(engine) == {"processed": 2}


@pytest.mark.slow
def test_replay_cli_after_a_mapping_fix(database_url: str, engine: Engine, tmp_path: Path) -> None:
    """A failed message is re-run by id; unknown ids are reported; exit code tells whether all succeeded."""
    from gateway.ingest import Ingestor

    ingestor = Ingestor(
        FhirStore(engine, cipher=cipher_for(engine)), open_settings(database_url=database_url)
    )
    bad = ingestor.handle(sample("bad_missing_patient_id"))
    good = ingestor.handle(sample("adt_a28_add_person"))
    assert (bad.status, good.status) == ("failed", "processed")
    result = run_cli("hl7", "replay", "--id", str(bad.journal_id), "99", "--database-url", database_url)
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"{bad.journal_id} failed AE PID-3 (patient identifier list) is empty (at PID-3)",
        "99 unknown - no such journal entry",
    ]
    result = run_cli("hl7", "replay", "--id", str(good.journal_id), "--database-url", database_url)
    assert (result.returncode, result.stdout) == (0, f"{good.journal_id} processed AA\n")
