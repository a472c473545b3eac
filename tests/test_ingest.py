"""gateway.ingest without sockets: journal-first ordering, duplicates, failures, charsets, replay."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from common import Hl7Settings
from common.identifiers import mrn_system
from fhir_store import journal
from fhir_store.writer import find_identifier_owner
from gateway.hl7_senders import SenderPolicy
from gateway.ingest import Ingestor
from gateway.mllp.client import parse_ack
from gateway.runtime import Runtime
from tests.support.settings import open_settings


def a04(control_id: str, mrn: str, *, name: bytes = "Nguyễn^An^Văn".encode(), msh18: bytes = b"") -> bytes:
    return (
        b"MSH|^~\\&|HIS_OLD|PK_CU|GW|CRM|20261120083000||ADT^A04|"
        + control_id.encode()
        + b"|P|2.3|||||VNM|"
        + msh18
        + b"\rPID|1||"
        + mrn.encode()
        + b"^^^PK_CU^MR||"
        + name
        + b"||19850312|M\r"
    )


@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    rt = Runtime.create(open_settings(database_url=database_url), migrate=False)
    yield rt
    rt.close()


def test_received_row_is_finished_by_the_retry(runtime: Runtime) -> None:
    ingestor = Ingestor(runtime.store, runtime.settings)
    raw = a04("R1", "R-1")
    journal_id = journal.insert_message(
        runtime.engine,
        raw=raw,
        peer="",
        sending_application="HIS_OLD",
        sending_facility="PK_CU",
        control_id="R1",
        message_type="ADT^A04",
        cipher=runtime.store.cipher,
    )  # as if the process died right after this commit
    outcome = ingestor.handle(raw)
    assert (outcome.journal_id, outcome.status, outcome.duplicate) == (journal_id, "processed", False)
    again = ingestor.handle(raw)
    assert again.duplicate and again.acks == outcome.acks
    assert journal.count_by_status(runtime.engine) == {"processed": 1}


def test_unexpected_exception_gives_ae_207_and_a_failed_row(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingestor = Ingestor(runtime.store, runtime.settings)

    def boom(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("Nguyễn Văn An 0912345678")  # details must not reach the ACK

    monkeypatch.setattr(runtime.store, "transact", boom)
    outcome = ingestor.handle(a04("X1", "X-1"))
    ack = parse_ack(outcome.acks[0])
    assert (ack.code, outcome.status) == ("AE", "failed")
    assert b"|207^" in outcome.acks[0] or b"207&" in outcome.acks[0]
    assert "Nguyễn" not in ack.text and "internal error" in ack.text
    monkeypatch.undo()
    replayed = Ingestor(runtime.store, runtime.settings).replay(outcome.journal_id or 0)
    assert (replayed.status, replayed.ack_code) == ("processed", "AA")
    entry = journal.load(runtime.engine, outcome.journal_id or 0, runtime.store.cipher)
    assert entry is not None and entry.attempts == 2 and entry.error is None


def test_per_sender_default_charset(runtime: Runtime) -> None:
    latin1_name = "Lê^Hà".encode("latin-1")  # MSH-18 empty: only the sender's setting can tell
    plain = Ingestor(runtime.store, runtime.settings)
    assert plain.handle(a04("C1", "C-1", name=latin1_name)).ack_code == "AR"  # not UTF-8
    configured = Ingestor(
        runtime.store, open_settings(hl7=Hl7Settings(sender_charsets="HIS_OLD^PK_CU=latin-1"))
    )
    assert configured.handle(a04("C2", "C-2", name=latin1_name)).ack_code == "AA"
    with runtime.engine.connect() as conn:
        owner = find_identifier_owner(conn, "Patient", mrn_system("PK_CU"), runtime.store.cipher.blind("C-2"))
    assert owner is not None
    assert runtime.store.read("Patient", owner).resource()["name"][0]["text"] == "Lê Hà"


def test_strict_mode_builds_acks_with_hl7apy(runtime: Runtime) -> None:
    strict = Ingestor(runtime.store, open_settings(hl7=Hl7Settings(strict=True)))
    outcome = strict.handle(a04("S1", "S-1", msh18=b"UNICODE UTF-8"))
    ack = parse_ack(outcome.acks[0])
    assert (ack.code, ack.control_id) == ("AA", "S1")


def test_sender_policy() -> None:
    policy = SenderPolicy.parse(" his-a = HIS_VN^BVDK_HN | LAB ; his-b=* ")
    assert policy.permits("his-a", "HIS_VN", "BVDK_HN")
    assert policy.permits("his-a", "LAB", "anything")
    assert not policy.permits("his-a", "HIS_VN", "OTHER")
    assert policy.permits("his-b", "X", "Y")
    assert not policy.permits(None, "HIS_VN", "BVDK_HN") and not policy.permits("his-c", "A", "B")
    assert SenderPolicy().permits(None, "any", "one")
