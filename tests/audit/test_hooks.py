"""The audit hook: one event per change in the same transaction, one per access; linear chain."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson
import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from sqlalchemy import Connection, Engine, func, select

from audit.checkpoints import AuditKeys
from audit.export import search_audit
from audit.hooks import AuditHook
from audit.schema import audit_checkpoint, audit_event
from audit.verify import verify_engine
from common.identifiers import CCCD_SYSTEM
from fhir_store.blind_index import QUERY_VALUE_DOMAIN
from fhir_store.model import Create, OperationResult, StoredResource
from fhir_store.pipeline import HookPipeline
from fhir_store.repository import FhirStore
from fhir_store.search import parse_query
from tests.audit.conftest import CTX, create, encounter, patient
from tests.support.store_keys import cipher_for


def _events(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [orjson.loads(r[0]) for r in conn.execute(select(audit_event.c.content).order_by("seq"))]


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(audit_event)).scalar_one())


def test_create_and_read_are_audited_with_patient_entity(
    store: FhirStore, engine: Engine, keys: AuditKeys
) -> None:
    pid = create(store, patient())
    eid = create(store, encounter(pid))
    store.read("Encounter", eid, CTX)
    events = _events(engine)
    assert [(e["action"], e["subtype"][0]["code"]) for e in events] == [
        ("C", "create"),
        ("C", "create"),
        ("R", "read"),
    ]
    read: Any = AuditEvent.model_validate(events[2])
    patients = [e.what.reference for e in read.entity if e.role and e.role.code == "1"]
    assert patients == [f"Patient/{pid}"]
    assert read.entity[0].what.reference == f"Encounter/{eid}/_history/1"
    with engine.connect() as conn:
        row = conn.execute(select(audit_event).where(audit_event.c.seq == 3)).one()
    assert (row.patient_id, row.agent, row.request_id, row.purpose) == (pid, "his-bvdk", "req-0001", "TREAT")
    assert verify_engine(engine, keys).ok


def test_search_is_one_event_with_query_and_all_patients(store: FhirStore, engine: Engine) -> None:
    p1, p2 = create(store, patient("Trần")), create(store, patient("Lê"))
    create(store, encounter(p1))
    create(store, encounter(p2))
    store.search(parse_query("Encounter", []), CTX, "Encounter?status=finished")
    search = _events(engine)[-1]
    assert search["subtype"][0]["code"] == "search-type" and search["action"] == "E"
    refs = {e["what"]["reference"] for e in search["entity"] if e.get("role", {}).get("code") == "1"}
    assert refs == {f"Patient/{p1}", f"Patient/{p2}"}
    query = next(e for e in search["entity"] if e.get("role", {}).get("code") == "24")
    assert query["description"] == "Encounter?status=finished"
    with engine.connect() as conn:
        for pid in (p1, p2):  # "who looked at patient X" finds the search through the link table
            found, _total = search_audit(conn, patient=pid, subtype="search-type")
            assert len(found) == 1


def test_failed_write_rolls_back_its_audit_record(store: FhirStore, engine: Engine) -> None:
    create(store, patient())
    before = _count(engine)

    def boom(_conn: Connection, _results: list[OperationResult]) -> None:
        raise RuntimeError("after the hooks")

    with pytest.raises(RuntimeError):
        store.transact([Create(patient("Phạm"))], CTX, extra=boom)
    assert _count(engine) == before


def test_failures_and_denials_are_recorded(hook: AuditHook, engine: Engine, keys: AuditKeys) -> None:
    hook.record_denial(CTX, "read", reason="missing scope system/Patient.r")
    hook.record_failure(CTX, "create", 400, description="invalid resource")
    hook.record_message(CTX, control_id="MSG1", message_type="ADT^A01", ack_code="AR")
    outcomes = [(e["outcome"], e["type"]["code"]) for e in _events(engine)]
    assert outcomes == [("12", "rest"), ("4", "rest"), ("8", "110107")]
    for event in _events(engine):
        AuditEvent.model_validate(event)
    assert verify_engine(engine, keys).ok


def test_checkpoint_every_n_events(
    store: FhirStore, engine: Engine, keys: AuditKeys, hook: AuditHook
) -> None:
    for _ in range(11):
        create(store, patient())
    with engine.connect() as conn:
        seqs = [int(s) for s in conn.execute(select(audit_checkpoint.c.seq).order_by("seq")).scalars()]
    assert seqs == [5, 10]
    assert hook.checkpoint() == 11
    assert verify_engine(engine, keys).checkpoints == 3


@pytest.mark.parametrize("async_reads", [False, True], ids=["sync-reads", "buffered-reads"])
def test_concurrent_writers_and_readers_keep_the_chain_linear(
    engine: Engine, keys: AuditKeys, async_reads: bool
) -> None:
    hook = AuditHook(engine, keys, checkpoint_every=7, async_reads=async_reads)
    store = FhirStore(
        engine,
        pipeline=HookPipeline.of(("audit", "group", hook), ("audit", "access", hook)),
        cipher=cipher_for(engine),
    )
    pid = create(store, patient())
    errors: list[BaseException] = []
    lock = threading.Lock()

    def work(i: int) -> None:
        try:
            if i % 3 == 0:
                store.read("Patient", pid, CTX)
            else:
                create(store, encounter(pid))
        except BaseException as exc:  # pragma: no cover - reported below
            with lock:
                errors.append(exc)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(120)))
    hook.close()  # flushes buffered access events
    assert errors == []
    result = verify_engine(engine, keys)
    assert result.ok, result.line()
    assert result.events == 121


def test_buffered_read_events_arrive_after_flush(engine: Engine, keys: AuditKeys) -> None:
    hook = AuditHook(engine, keys)
    store = FhirStore(
        engine,
        pipeline=HookPipeline.of(("audit", "group", hook), ("audit", "access", hook)),
        cipher=cipher_for(engine),
    )
    pid = create(store, patient())
    for _ in range(50):
        store.read("Patient", pid, CTX)
    hook.flush()
    events = _events(engine)
    assert len(events) == 51
    assert {e["entity"][1]["what"]["reference"] for e in events[1:]} == {f"Patient/{pid}"}
    hook.close()
    assert verify_engine(engine, keys).ok


def test_sqlite_read_with_a_stale_snapshot_falls_back_to_its_own_write(
    store: FhirStore, engine: Engine, hook: AuditHook, keys: AuditKeys, backend: str
) -> None:
    """A read whose snapshot predates another commit cannot upgrade: no error, event still chained."""
    pid = create(store, patient())
    with engine.begin() as reader:
        reader.execute(select(func.count()).select_from(audit_event)).scalar_one()  # snapshot taken
        create(store, patient("Võ"))  # another writer commits meanwhile
        stored = store.load_many(reader, "Patient", [pid])
        hook.on_access(reader, "read", stored, CTX, None)
    assert _count(engine) == 3
    assert verify_engine(engine, keys).ok


def test_buffered_search_links_every_patient(engine: Engine, keys: AuditKeys) -> None:
    """Many events and many patient links in one batch (COPY on PostgreSQL, executemany on SQLite)."""
    hook = AuditHook(engine, keys, checkpoint_every=4)
    store = FhirStore(
        engine,
        pipeline=HookPipeline.of(("audit", "group", hook), ("audit", "access", hook)),
        cipher=cipher_for(engine),
    )
    pids = [create(store, patient(f"Lê {i}")) for i in range(7)]
    for pid in pids:
        create(store, encounter(pid))
    for _ in range(3):
        store.search(parse_query("Encounter", []), CTX, "Encounter?status=finished")
        store.read("Patient", pids[0], CTX)
    hook.close()
    assert hook.dropped == 0
    with engine.connect() as conn:
        for pid in pids:
            found, _total = search_audit(conn, patient=pid, subtype="search-type")
            assert len(found) == 3
    result = verify_engine(engine, keys)
    assert result.ok and result.events == 14 + 6, result.line()


def test_appender_restarts_after_close_and_flush_waits_for_it(engine: Engine, keys: AuditKeys) -> None:
    hook = AuditHook(engine, keys)
    store = FhirStore(
        engine,
        pipeline=HookPipeline.of(("audit", "group", hook), ("audit", "access", hook)),
        cipher=cipher_for(engine),
    )
    hook.flush()  # nothing buffered, no appender: returns at once
    pid = create(store, patient())
    store.read("Patient", pid, CTX)
    hook.close()
    assert _count(engine) == 2
    store.read("Patient", pid, CTX)  # a later access starts a new appender
    hook.flush()
    assert _count(engine) == 3
    hook.close()
    assert verify_engine(engine, keys).ok


def test_an_access_whose_patients_cannot_be_read_is_still_recorded(engine: Engine, keys: AuditKeys) -> None:
    hook = AuditHook(engine, keys)
    store = FhirStore(
        engine,
        pipeline=HookPipeline.of(("audit", "group", hook), ("audit", "access", hook)),
        cipher=cipher_for(engine),
    )
    pid = create(store, patient())
    store.read("Patient", pid, CTX)
    broken = StoredResource("Encounter", "e1", 1, 0, False, b"not json")
    hook.on_access(None, "read", [broken], CTX, None)  # type: ignore[arg-type]  # buffered: conn unused
    store.read("Patient", pid, CTX)
    hook.close()
    assert (hook.dropped, _count(engine)) == (0, 4)
    event = _events(engine)[2]
    assert [e["what"].get("reference") for e in event["entity"]] == ["Encounter/e1/_history/1", None]
    assert verify_engine(engine, keys).ok


def test_search_query_in_the_audit_trail_carries_no_identifier_in_clear(
    store: FhirStore, hook: AuditHook, engine: Engine
) -> None:
    """A search by CCCD or phone is audited with the keyed hash of the value, not the value."""
    cccd, phone = "079085001234", "0912345678"
    body = patient()
    body["identifier"] = [{"system": CCCD_SYSTEM, "value": cccd}]
    body["telecom"] = [{"system": "phone", "value": "+84912345678"}]
    create(store, body)
    query_text = f"identifier={CCCD_SYSTEM}|{cccd}&phone={phone}&family=Nguy&birthdate=ge1985-03-12"
    query = parse_query("Patient", [("identifier", f"{CCCD_SYSTEM}|{cccd}"), ("phone", phone)])
    assert len(store.search(query, CTX, query_text).matches) == 1
    hook.flush()
    with engine.connect() as conn:
        contents = [bytes(r[0]) for r in conn.execute(select(audit_event.c.content))]
    searches = [c for c in contents if b"family=" in c]
    assert len(searches) == 1
    assert cccd.encode() not in searches[0] and phone.encode() not in searches[0]
    assert store.cipher.blind(cccd).encode() in searches[0]
    # issue #18 item 5: names and birth dates are blinded too; parameter names stay readable
    assert b"Nguy" not in searches[0] and b"1985" not in searches[0] and b"birthdate=" in searches[0]
    assert store.cipher.blind(QUERY_VALUE_DOMAIN + "Nguy").encode() in searches[0]
