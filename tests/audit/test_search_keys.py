"""Patient and entity searches go through ``audit_event_key`` (migration 0008), on both backends.

What could go wrong: a key row missing (the event is invisible to a search),
an entity that is not a patient found by a patient search, a versioned entity
matching other versions, a search that scans the whole trail, and a trail
written before 0008 that the migration fails to index or the verifier rejects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from sqlalchemy import Connection, Engine, inspect, select, text

from audit.chain import chain_hash
from audit.checkpoints import AuditKeys
from audit.events import Target, rest_event
from audit.export import search_audit
from audit.hooks import AuditHook
from audit.rows import prepare
from audit.schema import audit_event_key
from audit.verify import verify_engine
from fhir_store.database import make_engine
from fhir_store.migrations import alembic_config, upgrade
from fhir_store.repository import FhirStore
from fhir_store.search import parse_query
from tests.audit.conftest import CTX, create, encounter, patient
from tests.support.postgres import PostgresCluster


def _keys(engine: Engine) -> dict[int, set[tuple[str, bool]]]:
    k = audit_event_key.c
    out: dict[int, set[tuple[str, bool]]] = {}
    with engine.connect() as conn:
        for seq, key, is_patient in conn.execute(select(k.seq, k.key, k.patient)):
            out.setdefault(int(seq), set()).add((str(key), bool(is_patient)))
    return out


def test_one_key_row_for_a_patient_event_two_for_an_encounter(store: FhirStore, engine: Engine) -> None:
    pid = create(store, patient())  # seq 1: Patient create
    store.read("Patient", pid, CTX)  # seq 2
    eid = create(store, encounter(pid))  # seq 3
    store.read("Encounter", eid, CTX)  # seq 4
    keys = _keys(engine)
    assert keys[1] == keys[2] == {(f"Patient/{pid}", True)}
    assert keys[3] == keys[4] == {(f"Patient/{pid}", True), (f"Encounter/{eid}", False)}


def test_search_event_keys_every_patient(store: FhirStore, engine: Engine) -> None:
    pids = [create(store, patient(f"Lê {i}")) for i in range(3)]
    for pid in pids:
        create(store, encounter(pid))
    store.search(parse_query("Encounter", []), CTX, "Encounter?status=finished")
    last = max(_keys(engine))
    assert _keys(engine)[last] == {(f"Patient/{pid}", True) for pid in pids}
    with engine.connect() as conn:
        for pid in pids:
            assert search_audit(conn, patient=pid, subtype="search-type")[1] == 1


def test_entity_that_is_not_a_patient_of_the_event(engine: Engine, hook: AuditHook) -> None:
    """A failed read of Patient/X names X as entity only: found by entity, not by patient."""
    hook.record_failure(CTX, "read", 404, target=Target("Patient", "ghost"))
    assert _keys(engine)[1] == {("Patient/ghost", False)}
    with engine.connect() as conn:
        assert search_audit(conn, patient="ghost")[1] == 0
        assert search_audit(conn, entity="Patient/ghost")[1] == 1


def test_entity_search_matches_every_version_or_the_one_asked(store: FhirStore, engine: Engine) -> None:
    pid = create(store, patient())
    store.read("Patient", pid, CTX)
    store.vread("Patient", pid, 1, CTX)
    eid = create(store, encounter(pid))
    with engine.connect() as conn:
        assert search_audit(conn, entity=f"Patient/{pid}")[1] == 3  # create, read, vread
        assert search_audit(conn, entity=f"Patient/{pid}/_history/1")[1] == 3
        assert search_audit(conn, entity=f"Patient/{pid}/_history/2")[1] == 0
        assert search_audit(conn, entity=f"Encounter/{eid}")[1] == 1
        assert search_audit(conn, patient=pid)[1] == 4
        assert search_audit(conn, patient=pid, entity=f"Encounter/{eid}")[1] == 1


def _plan(conn: Connection, sql: str) -> str:
    if conn.dialect.name == "sqlite":
        return "\n".join(str(r[-1]) for r in conn.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
    conn.execute(text("SET LOCAL enable_seqscan = off"))  # a tiny table: ask which index could serve it
    return "\n".join(str(r[0]) for r in conn.execute(text(f"EXPLAIN {sql}")))


@pytest.mark.parametrize("column", ["patient", "entity"])
def test_searches_use_the_key_index(store: FhirStore, engine: Engine, column: str) -> None:
    pid = create(store, patient())
    store.read("Patient", pid, CTX)
    with engine.connect() as conn, conn.begin():
        stmt = search_statement(conn, column, pid)
        shown = _plan(conn, stmt)
    assert "ix_audit_event_key_key_patient_seq" in shown, shown


def search_statement(conn: Connection, column: str, pid: str) -> str:
    from audit.export import AuditFilter, _where
    from audit.schema import audit_event

    value = pid if column == "patient" else f"Patient/{pid}"
    filters: dict[str, Any] = {column: value}
    stmt = _where(select(audit_event.c.content), AuditFilter(**filters))
    compiled = stmt.compile(conn, compile_kwargs={"literal_binds": True})
    return str(compiled)


# -- migration 0008 on a trail written before it --------------------------------------


@pytest.fixture
def url_at_0007(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    cluster: PostgresCluster | None = None
    name = f"t_{uuid.uuid4().hex}"
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        cluster = request.getfixturevalue("fast_pg_cluster")
        url = cluster.create_database(name)
    engine = make_engine(url, pool_size=1)
    with engine.begin() as conn:
        config = alembic_config(url)
        config.attributes["connection"] = conn
        command.upgrade(config, "0007")
    engine.dispose()
    yield url
    if cluster is not None:
        cluster.drop_database(name)


def _old_rows(keys: AuditKeys) -> tuple[list[dict[str, object]], list[dict[str, object]]]:
    """Chain rows and patient links as the writer stored them before 0008."""
    events = [
        rest_event(CTX, "read", recorded_us=10, targets=[Target("Patient", "p1", 1)], patient_ids=["p1"]),
        rest_event(CTX, "read", recorded_us=20, targets=[Target("Encounter", "e1", 2)], patient_ids=["p1"]),
        rest_event(CTX, "search-type", recorded_us=30, patient_ids=["p1", "p2"], query="Encounter?x=1"),
        rest_event(CTX, "read", recorded_us=40, targets=[Target("Patient", "ghost")]),
        rest_event(CTX, "search-type", recorded_us=50, query="Patient?name=x"),
    ]
    rows, links, prev = [], [], b"\x00" * 32
    for seq, event in enumerate(events, start=1):
        content, columns, patients = prepare(event)
        digest = chain_hash(prev, content)
        names = ("event_id", "recorded_us", "action", "type", "subtype", "outcome", "agent", "patient_id")
        values = dict(zip((*names, "entity", "purpose", "request_id"), columns, strict=True))
        rows.append({"seq": seq, **values, "content": content, "prev_hash": prev, "hash": digest})
        rows[-1]["mac"] = keys.mac(digest)
        if len(patients) > 1:
            links += [{"seq": seq, "patient_id": pid} for pid in patients]
        prev = digest
    return rows, links


def test_migration_indexes_an_older_trail(url_at_0007: str, keys: AuditKeys) -> None:
    rows, links = _old_rows(keys)
    columns = ", ".join(rows[0])
    engine = make_engine(url_at_0007, pool_size=1)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"INSERT INTO audit_event ({columns}) VALUES (:{', :'.join(rows[0])})"), rows)
            conn.execute(
                text("INSERT INTO audit_event_patient (seq, patient_id) VALUES (:seq, :patient_id)"), links
            )
        upgrade(url_at_0007)
        assert _keys(engine) == {
            1: {("Patient/p1", True)},
            2: {("Patient/p1", True), ("Encounter/e1", False)},
            3: {("Patient/p1", True), ("Patient/p2", True)},
            4: {("Patient/ghost", False)},
        }
        assert verify_engine(engine, keys).line() == "ok 5 events"
        with engine.connect() as conn:
            assert search_audit(conn, patient="p1")[1] == 3
            assert search_audit(conn, patient="p2")[1] == 1
            assert search_audit(conn, entity="Encounter/e1")[1] == 1
            assert search_audit(conn, entity="Patient/ghost")[1] == 1
    finally:
        engine.dispose()


def test_downgrade_restores_the_patient_links(database_url: str, store: FhirStore, engine: Engine) -> None:
    pids = [create(store, patient(f"Lê {i}")) for i in range(2)]
    for pid in pids:
        create(store, encounter(pid))
    store.search(parse_query("Encounter", []), CTX, "Encounter?status=finished")  # seq 5: two patients
    engine.dispose()
    downgrade_engine = make_engine(database_url, pool_size=1)
    try:
        with downgrade_engine.begin() as conn:
            config = alembic_config(database_url)
            config.attributes["connection"] = conn
            command.downgrade(config, "0007")
        with downgrade_engine.connect() as conn:
            links = conn.execute(text("SELECT seq, patient_id FROM audit_event_patient")).all()
            tables = set(inspect(conn).get_table_names())
    finally:
        downgrade_engine.dispose()
    assert sorted((int(s), str(p)) for s, p in links) == sorted((5, pid) for pid in pids)
    assert "audit_event_key" not in tables
