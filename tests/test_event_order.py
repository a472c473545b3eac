"""Issue #15 item 2: an older HL7 message never overwrites newer state (fhir_store.event_order)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from common.identifiers import mrn_system, visit_system
from fhir_store import ConditionalUpdate, RequestContext, journal
from fhir_store.writer import find_identifier_owner
from gateway.ingest import Ingestor
from gateway.metrics import OpsCollector
from gateway.mllp.client import parse_ack
from gateway.runtime import Runtime
from tests.support.hl7_events import AN, AN_DUP, adt, merge, pid, pv1
from tests.support.settings import open_settings

AUTH = "BVEO"


@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    rt = Runtime.create(open_settings(database_url=database_url), migrate=False)
    yield rt
    rt.close()


def owner(rt: Runtime, resource_type: str, system: str, value: str) -> dict[str, Any]:
    with rt.engine.connect() as conn:
        res_id = find_identifier_owner(conn, resource_type, system, rt.store.cipher.blind(value))
    assert res_id is not None
    return rt.store.read(resource_type, res_id).resource()


def register(when: str, control: str, street: str, phone: str) -> bytes:
    return adt(
        AUTH, "A04", when, control, AN, pid(AUTH, AN, street=street, phone=phone), pv1(AUTH, "V1", "O", when)
    )


def update(when: str, control: str, street: str, phone: str) -> bytes:
    return adt(AUTH, "A08", when, control, AN, pid(AUTH, AN, street=street, phone=phone))


def discharge(when: str, control: str) -> bytes:
    return adt(
        AUTH, "A03", when, control, AN, pv1(AUTH, "V1", "O", "202611200800", when), structure="ADT_A03"
    )


def test_an_older_update_is_journaled_stale_and_changes_nothing(runtime: Runtime) -> None:
    ingestor = Ingestor(runtime.store, runtime.settings)
    assert ingestor.handle(register("202611200800", "E1", "12 Lý Thường Kiệt", "0912345678")).ack_code == "AA"
    newer = ingestor.handle(update("202611221000", "E2", "88 Trần Hưng Đạo", "0977888999"))
    before = owner(runtime, "Patient", mrn_system(AUTH), AN.mrn)

    older = ingestor.handle(update("202611211000", "E3", "5 Hàng Bài", "0905000111"))

    ack = parse_ack(older.acks[0])
    assert (ack.code, older.status) == ("AA", "stale")  # the sender did nothing wrong
    after = owner(runtime, "Patient", mrn_system(AUTH), AN.mrn)
    assert after == before and after["address"][0]["line"] == ["88 Trần Hưng Đạo"]
    entry = journal.load(runtime.engine, older.journal_id or 0, runtime.store.cipher)
    assert entry is not None and entry.status == "stale" and entry.error is not None
    assert f"Patient/{after['id']}" in entry.error and "2026-11-22T03:00:00" in entry.error
    assert f"hl7-{newer.journal_id}" in entry.error  # the newer event is named
    for private in ("Hàng Bài", "0905000111", "Nguyễn", AN.mrn):
        assert private not in entry.error
    assert ingestor.metrics.stale_snapshot() == {"ADT^A08": 1}
    registry = CollectorRegistry()
    registry.register(OpsCollector(runtime.engine, ingestor.metrics))
    scraped = generate_latest(registry).decode()
    assert 'carebridge_hl7_messages_stale_total{message_type="ADT^A08"} 1.0' in scraped
    again = ingestor.handle(update("202611211000", "E3", "5 Hàng Bài", "0905000111"))
    assert again.duplicate and again.acks == older.acks and again.status == "stale"


def test_a_visit_never_moves_back_but_a_newer_cancel_reopens_it(runtime: Runtime) -> None:
    ingestor = Ingestor(runtime.store, runtime.settings)
    assert ingestor.handle(discharge("202611201015", "V1")).status == "processed"
    late = ingestor.handle(register("202611200800", "V2", "12 Lý Thường Kiệt", "0912345678"))
    assert late.status == "stale"
    visit = owner(runtime, "Encounter", visit_system(AUTH), "V1")
    assert visit["status"] == "finished" and visit["period"]["end"].startswith("2026-11-20T10:15")
    # the A04's full demographics still land: the A03 only created the patient (thin PID)
    patient = owner(runtime, "Patient", mrn_system(AUTH), AN.mrn)
    assert patient["address"][0]["line"] == ["12 Lý Thường Kiệt"]

    cancel = adt(AUTH, "A13", "202611201100", "V3", AN, pv1(AUTH, "V1", "O", "202611200800"))
    assert ingestor.handle(cancel).status == "processed"
    assert owner(runtime, "Encounter", visit_system(AUTH), "V1")["status"] == "in-progress"


def test_same_event_time_is_applied_in_arrival_order(runtime: Runtime) -> None:
    ingestor = Ingestor(runtime.store, runtime.settings)
    ingestor.handle(update("202611200900", "T1", "1 Phố Huế", "0912000001"))
    tie = ingestor.handle(update("202611200900", "T2", "2 Phố Huế", "0912000002"))
    assert tie.status == "processed"
    assert owner(runtime, "Patient", mrn_system(AUTH), AN.mrn)["address"][0]["line"] == ["2 Phố Huế"]


def test_event_time_offsets_are_compared_in_utc(runtime: Runtime) -> None:
    ingestor = Ingestor(runtime.store, runtime.settings)
    ingestor.handle(update("202611200900", "Z1", "1 Phố Huế", "0912000001"))  # 02:00 UTC
    utc = update("202611200900", "Z2", "2 Phố Huế", "0912000002").replace(b"00+0700", b"00+0000")
    assert ingestor.handle(utc).status == "processed"  # 09:00 UTC is later
    assert owner(runtime, "Patient", mrn_system(AUTH), AN.mrn)["address"][0]["line"] == ["2 Phố Huế"]


def test_rest_writes_neither_check_nor_set_event_times(runtime: Runtime) -> None:
    ingestor = Ingestor(runtime.store, runtime.settings)
    ingestor.handle(update("202611221000", "R1", "88 Trần Hưng Đạo", "0977888999"))
    patient = owner(runtime, "Patient", mrn_system(AUTH), AN.mrn)
    by_rest = {**patient, "address": [{"line": ["1 REST"], "country": "VNM"}]}
    by_rest.pop("meta")
    criteria = f"identifier={mrn_system(AUTH)}|{AN.mrn}"
    rest = RequestContext(
        request_id="rest-1", client_id="his", role="his_integration", channel="rest", grants=("system/*.*",)
    )
    results = runtime.store.transact([ConditionalUpdate("Patient", criteria, by_rest)], rest)
    assert results[0].message is None and results[0].status == 200
    assert ingestor.handle(update("202611211000", "R2", "5 Hàng Bài", "0905000111")).status == "stale"
    assert owner(runtime, "Patient", mrn_system(AUTH), AN.mrn)["address"][0]["line"] == ["1 REST"]
    assert ingestor.handle(update("202611231000", "R3", "6 Hàng Bài", "0905000111")).status == "processed"


def test_a_message_from_before_a_merge_updates_the_merged_record(runtime: Runtime) -> None:
    """The A40 arrives first: the duplicate's own older registration is its history, not the survivor's."""
    ingestor = Ingestor(runtime.store, runtime.settings)
    ingestor.handle(register("202611200800", "M1", "88 Trần Hưng Đạo", "0977888999"))
    assert ingestor.handle(merge(AUTH, "202611201300", "M2", AN, AN_DUP)).status == "processed"
    dup_registration = adt(
        AUTH,
        "A04",
        "202611200805",
        "M3",
        AN_DUP,
        pid(AUTH, AN_DUP, street="14 Lý Thường Kiệt"),
        pv1(AUTH, "V5", "O", "202611200805"),
    )
    assert ingestor.handle(dup_registration).status == "processed"

    survivor = owner(runtime, "Patient", mrn_system(AUTH), AN.mrn)
    retired = owner(runtime, "Patient", mrn_system(AUTH), AN_DUP.mrn)
    assert survivor["address"][0]["line"] == ["88 Trần Hưng Đạo"]  # untouched
    assert retired["address"][0]["line"] == ["14 Lý Thường Kiệt"] and retired["active"] is False
    assert retired["link"] == [{"other": {"reference": f"Patient/{survivor['id']}"}, "type": "replaced-by"}]
    visit = owner(runtime, "Encounter", visit_system(AUTH), "V5")
    assert visit["subject"]["reference"] == f"Patient/{survivor['id']}"  # the merge moved the visits

    after_merge = adt(AUTH, "A08", "202611201400", "M4", AN_DUP, pid(AUTH, AN_DUP, street="90 Trần Hưng Đạo"))
    assert ingestor.handle(after_merge).status == "processed"
    assert owner(runtime, "Patient", mrn_system(AUTH), AN.mrn)["address"][0]["line"] == ["90 Trần Hưng Đạo"]
    assert owner(runtime, "Patient", mrn_system(AUTH), AN_DUP.mrn)["address"][0]["line"] == [
        "14 Lý Thường Kiệt"
    ]
