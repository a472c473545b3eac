"""gateway.ingest_group: messages waiting together share one store transaction, answers stay per message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any

import pytest
from sqlalchemy import Connection, select

from audit.schema import audit_event
from common.identifiers import mrn_system
from fhir_store import journal
from fhir_store.writer import find_identifier_owner
from gateway.ingest import Ingestor
from gateway.ingest_group import process_group
from gateway.ingest_model import Inbound, Outcome
from gateway.mllp.client import parse_ack
from gateway.runtime import Runtime
from tests.support.settings import open_settings
from tests.test_ingest import a04


@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    rt = Runtime.create(open_settings(database_url=database_url), migrate=False)
    yield rt
    rt.close()


class TransactionCounter:
    """Counts the store's write transactions (each one commit)."""

    def __init__(self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = runtime.store.write_connection

        def counted() -> AbstractContextManager[Connection]:
            self.count += 1
            return original()

        monkeypatch.setattr(runtime.store, "write_connection", counted)


def run(ingestor: Ingestor, messages: list[bytes]) -> list[Outcome]:
    inbounds: list[Inbound] = [ingestor.prepare(m) for m in messages]
    return process_group(ingestor, [(i, None) for i in inbounds])


def owner(runtime: Runtime, mrn: str) -> dict[str, Any] | None:
    with runtime.engine.connect() as conn:
        res_id = find_identifier_owner(conn, "Patient", mrn_system("PK_CU"), runtime.store.cipher.blind(mrn))
    return None if res_id is None else runtime.store.read("Patient", res_id).resource()


def test_waiting_messages_share_one_transaction_and_keep_their_order(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingestor = Ingestor(runtime.store, runtime.settings)
    counter = TransactionCounter(runtime, monkeypatch)
    messages = [a04(f"G{i}", f"G-{i}") for i in range(5)]
    # the same patient again, later in the batch: must be applied after its registration
    messages.append(a04("G5", "G-0", name="Trần^Bình^Thị".encode()))
    outcomes = run(ingestor, messages)
    assert [o.ack_code for o in outcomes] == ["AA"] * 6
    assert counter.count == 1
    assert [parse_ack(o.acks[0]).control_id for o in outcomes] == [f"G{i}" for i in range(6)]
    assert len({o.journal_id for o in outcomes}) == 6
    assert journal.count_by_status(runtime.engine) == {"processed": 6}
    first = owner(runtime, "G-0")
    assert first is not None and first["meta"]["versionId"] == "2" and first["name"][0]["family"] == "Trần"
    with runtime.engine.connect() as conn:
        request_ids = {r[0] for r in conn.execute(select(audit_event.c.request_id))}
    assert {f"hl7-{o.journal_id}" for o in outcomes} <= request_ids  # one import trail per message


def test_a_failing_message_sends_the_group_back_to_one_transaction_each(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingestor = Ingestor(runtime.store, runtime.settings)

    def claiming_f0(control_id: str, mrn: str) -> bytes:
        # another patient's record number is a conflict (a shared CCCD is not: it is tagged, issue #15)
        return a04(control_id, mrn).replace(b"^^^PK_CU^MR|", b"^^^PK_CU^MR~F-0^^^PK_CU^MR|")

    assert run(ingestor, [a04("F0", "F-0")])[0].ack_code == "AA"
    counter = TransactionCounter(runtime, monkeypatch)
    outcomes = run(ingestor, [a04("F1", "F-1"), claiming_f0("F2", "F-2"), a04("F3", "F-3")])
    assert [o.ack_code for o in outcomes] == ["AA", "AE", "AA"]
    assert counter.count >= 1 + 3  # the group, rolled back; then each message alone
    assert outcomes[1].status == journal.FAILED and "already belongs" in (outcomes[1].error or "")
    assert owner(runtime, "F-2") is None
    assert owner(runtime, "F-1") is not None and owner(runtime, "F-3") is not None
    assert journal.count_by_status(runtime.engine) == {"processed": 3, "failed": 1}


def test_duplicates_and_refused_messages_in_a_batch(runtime: Runtime) -> None:
    ingestor = Ingestor(runtime.store, runtime.settings)
    done = run(ingestor, [a04("D0", "D-0")])[0]
    outcomes = run(
        ingestor,
        [a04("D1", "D-1"), a04("D0", "D-0"), b"garbage", a04("D1", "D-1"), a04("D2", "D-2")],
    )
    assert [o.ack_code for o in outcomes] == ["AA", "AA", "AR", "AA", "AA"]
    assert outcomes[1].duplicate and outcomes[1].acks == done.acks  # delivered before the batch
    assert outcomes[3].duplicate and outcomes[3].acks == outcomes[0].acks  # twice in the batch
    assert not outcomes[0].duplicate and not outcomes[4].duplicate
    assert journal.count_by_status(runtime.engine) == {"processed": 3, "rejected": 1}
    patient = owner(runtime, "D-1")
    assert patient is not None and patient["meta"]["versionId"] == "1"
