"""The sender check runs before the duplicate lookup; the group commit keeps reuse and duplicates apart."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import select

from common.settings import Hl7Settings
from fhir_store.schema import hl7_journal
from gateway.hl7_senders import SenderPolicy
from gateway.ingest import Ingestor
from gateway.ingest_group import process_group
from gateway.mllp.client import parse_ack
from gateway.runtime import Runtime
from tests.support.settings import open_settings
from tests.test_ingest import a04

POLICY = SenderPolicy.parse("his-pkcu=HIS_OLD^PK_CU")


@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    rt = Runtime.create(open_settings(database_url=database_url), migrate=False)
    yield rt
    rt.close()


def statuses(runtime: Runtime) -> list[tuple[str, bool]]:
    j = hl7_journal
    with runtime.engine.connect() as conn:
        stmt = select(j.c.status, j.c.control_id_reused).order_by(j.c.id)
        return [(str(r[0]), bool(r[1])) for r in conn.execute(stmt)]


def test_forbidden_sender_resending_a_known_control_id_gets_the_refusal(runtime: Runtime) -> None:
    ingestor = Ingestor(runtime.store, runtime.settings, policy=POLICY)
    message = a04("PK0001", "PK-1")
    accepted = ingestor.handle(message, identity="his-pkcu")
    assert accepted.ack_code == "AA"
    for identity in ("intruder", None, "intruder"):  # another TLS identity, or none, claiming HIS_OLD^PK_CU
        refused = ingestor.handle(message, identity=identity)
        assert refused.ack_code == "AR" and not refused.duplicate
        assert refused.acks[0] != accepted.acks[0]
        assert parse_ack(refused.acks[0]).code == "AR"
    # each attempt is journaled, and none counts as a reused control id
    assert statuses(runtime) == [("processed", False)] + [("rejected", False)] * 3
    assert ingestor.metrics.reused_snapshot() == {}
    # the permitted sender's retry is still its duplicate
    retry = ingestor.handle(message, identity="his-pkcu")
    assert retry.duplicate and retry.acks == accepted.acks


def test_group_path_checks_the_sender_before_the_duplicate_lookup(runtime: Runtime) -> None:
    ingestor = Ingestor(runtime.store, runtime.settings, policy=POLICY)
    message = a04("PK0002", "PK-2")
    assert ingestor.handle(message, identity="his-pkcu").ack_code == "AA"
    items = [(ingestor.prepare(message, identity="intruder"), None), (ingestor.prepare(message), None)]
    outcomes = process_group(ingestor, items)
    assert [o.ack_code for o in outcomes] == ["AR", "AR"] and not any(o.duplicate for o in outcomes)


def test_group_keeps_a_reused_id_apart_from_a_duplicate(runtime: Runtime) -> None:
    ingestor = Ingestor(runtime.store, runtime.settings)
    first = a04("PK0003", "PK-3")
    reused = a04("PK0003", "PK-4", name="Trần^Bình^Thị".encode())  # counter restarted: another patient
    outcomes = process_group(ingestor, [(ingestor.prepare(m), None) for m in (first, reused, first, reused)])
    assert [o.ack_code for o in outcomes] == ["AA"] * 4
    assert [o.duplicate for o in outcomes] == [False, False, True, True]
    assert outcomes[2].acks == outcomes[0].acks and outcomes[3].acks == outcomes[1].acks
    assert statuses(runtime) == [("processed", False), ("processed", True)]
    assert ingestor.metrics.reused_snapshot() == {"process": 1}


def test_group_refuses_a_reused_id_message_by_message(database_url: str) -> None:
    settings = open_settings(database_url=database_url, hl7=Hl7Settings(control_id_reuse="refuse"))
    rt = Runtime.create(settings, migrate=False)
    try:
        ingestor = Ingestor(rt.store, settings)
        messages = [a04("PK0005", "PK-5"), a04("PK0006", "PK-6"), a04("PK0005", "PK-7")]
        outcomes = process_group(ingestor, [(ingestor.prepare(m), None) for m in messages])
        assert [o.ack_code for o in outcomes] == ["AA", "AA", "AE"]
        assert statuses(rt) == [("processed", False), ("processed", False), ("failed", True)]
        assert ingestor.metrics.reused_snapshot() == {"refuse": 1}
    finally:
        rt.close()
