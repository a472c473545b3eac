"""Tampering in the database is caught by ``carebridge audit verify`` (the real CLI).

On PostgreSQL the ``tamper`` fixture first disables the append-only triggers as
a superuser would: the chain, MACs and signed checkpoints still expose it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, text

from audit.chain import chain_hash
from audit.checkpoints import AuditKeys
from audit.rows import canonical
from audit.schema import audit_event
from audit.verify import verify_engine
from fhir_store.repository import FhirStore
from tests.audit.conftest import CTX, create, encounter, patient
from tests.support.audit_guard import guards_lifted

Cli = Callable[..., tuple[int, str]]
Tamper = Callable[..., None]


@pytest.fixture
def chain(store: FhirStore) -> dict[int, str]:
    """12 events (checkpoints at 5 and 10); returns seq -> event id."""
    pid = create(store, patient())
    for _ in range(5):
        eid = create(store, encounter(pid))
        store.read("Encounter", eid, CTX)
    create(store, patient("Hoàng"))
    with store.engine.connect() as conn:
        return {int(s): str(e) for s, e in conn.execute(select(audit_event.c.seq, audit_event.c.event_id))}


def _bad(cli: Cli, seq: int, event_id: str | None = None) -> str:
    code, out = cli("verify")
    assert code == 1, out
    expected = f"bad seq {seq}" + (f" event {event_id}" if event_id else "")
    assert out.startswith(expected), out
    return out


def test_intact_chain_prints_the_contract_line(chain: dict[int, str], cli: Cli) -> None:
    assert cli("verify") == (0, f"ok {len(chain)} events\n")


def test_edited_content_is_detected(chain: dict[int, str], cli: Cli, tamper: Tamper) -> None:
    tamper("UPDATE audit_event SET content = :c WHERE seq = 7", params={"c": b'{"x":1}'})
    assert "edited" in _bad(cli, 7, chain[7])


def test_edited_index_column_is_detected(chain: dict[int, str], cli: Cli, tamper: Tamper) -> None:
    tamper("UPDATE audit_event SET outcome = '12' WHERE seq = 4")
    assert "column outcome" in _bad(cli, 4, chain[4])


@pytest.mark.parametrize(
    ("statement", "seq"),
    [
        ("DELETE FROM audit_event_key WHERE seq = 5 AND key LIKE 'Patient/%'", 5),  # hide a read
        ("UPDATE audit_event_key SET patient = :no WHERE seq = 1", 1),  # patient search misses it
        ("UPDATE audit_event_key SET key = 'Encounter/other' WHERE seq = 3 AND NOT patient", 3),
        ("INSERT INTO audit_event_key (seq, key, patient) VALUES (4, 'Patient/someone', :yes)", 4),
    ],
)
def test_edited_search_key_is_detected(
    chain: dict[int, str], cli: Cli, tamper: Tamper, statement: str, seq: int
) -> None:
    tamper(statement, params={"no": False, "yes": True})
    assert "search keys" in _bad(cli, seq, chain[seq])


def test_search_key_of_no_event_is_detected(chain: dict[int, str], cli: Cli, tamper: Tamper) -> None:
    tamper(
        "INSERT INTO audit_event_key (seq, key, patient) VALUES (99, 'Patient/framed', :yes)",
        params={"yes": True},
    )
    assert "of no event" in _bad(cli, 99)


def test_deleted_row_is_detected(chain: dict[int, str], cli: Cli, tamper: Tamper) -> None:
    tamper("DELETE FROM audit_event WHERE seq = 3")
    assert "deleted" in _bad(cli, 4, chain[4])


def test_deleted_tail_is_detected_by_the_checkpoint(chain: dict[int, str], cli: Cli, tamper: Tamper) -> None:
    tamper("DELETE FROM audit_event WHERE seq >= 8")
    assert "checkpoint at seq 10" in _bad(cli, 8)


def test_swapped_rows_are_detected(chain: dict[int, str], cli: Cli, tamper: Tamper) -> None:
    tamper(
        "UPDATE audit_event SET seq = -1 WHERE seq = 2",
        "UPDATE audit_event SET seq = 2 WHERE seq = 6",
        "UPDATE audit_event SET seq = 6 WHERE seq = -1",
    )
    assert "reordered" in _bad(cli, 2, chain[6])


def _forge(engine: Engine, seq: int, prev: bytes) -> tuple[str, dict[str, object]]:
    """A plausible event copied from seq 2 with a new id; its chain hash correctly recomputed."""
    with engine.connect() as conn:
        row = conn.execute(select(audit_event).where(audit_event.c.seq == 2)).one()
    event = orjson.loads(row.content)
    event["id"] = "forged-0001"
    content = canonical(event)
    values = {k: getattr(row, k) for k in row._fields}
    values.update(
        seq=seq,
        event_id="forged-0001",
        content=content,
        prev_hash=prev,
        hash=chain_hash(prev, content),
        mac=hashlib.sha256(b"guess").digest(),
    )
    return "forged-0001", values


_INSERT = (
    "INSERT INTO audit_event (seq, event_id, recorded_us, action, type, subtype, outcome, agent, patient_id,"
    " entity, purpose, request_id, content, prev_hash, hash, mac) VALUES (:seq, :event_id, :recorded_us,"
    " :action, :type, :subtype, :outcome, :agent, :patient_id, :entity, :purpose, :request_id, :content,"
    " :prev_hash, :hash, :mac)"
)


def test_forged_row_appended_with_valid_hash_is_detected(
    chain: dict[int, str], cli: Cli, tamper: Tamper, engine: Engine
) -> None:
    last = max(chain)
    with engine.connect() as conn:
        prev = bytes(conn.execute(select(audit_event.c.hash).where(audit_event.c.seq == last)).scalar_one())
    forged_id, values = _forge(engine, last + 1, prev)
    tamper(_INSERT, params=values)
    assert "MAC" in _bad(cli, last + 1, forged_id)


def test_forged_row_inserted_in_the_middle_is_detected(
    chain: dict[int, str], cli: Cli, tamper: Tamper, engine: Engine
) -> None:
    with engine.connect() as conn:
        prev = bytes(conn.execute(select(audit_event.c.hash).where(audit_event.c.seq == 3)).scalar_one())
    forged_id, values = _forge(engine, 4, prev)
    shifts = [
        f"UPDATE audit_event SET seq = seq + 1 WHERE seq = {s}" for s in sorted(chain, reverse=True)[:-3]
    ]
    tamper(*shifts, _INSERT, params=values)
    _bad(cli, 4, forged_id)


def test_forged_checkpoint_is_detected(chain: dict[int, str], cli: Cli, tamper: Tamper) -> None:
    tamper("UPDATE audit_checkpoint SET signature = :s WHERE seq = 5", params={"s": b"\x01" * 64})
    assert "signature" in _bad(cli, 5, chain[5])


def test_public_key_only_verification(
    chain: dict[int, str], cli: Cli, tmp_path: Path, tamper: Tamper
) -> None:
    code, pem = cli("public-key")
    assert code == 0 and pem.startswith("-----BEGIN PUBLIC KEY-----")
    pem_file = tmp_path / "audit-public.pem"
    pem_file.write_text(pem)
    assert cli("verify", "--public-key", str(pem_file)) == (0, f"ok {len(chain)} events\n")
    tamper("UPDATE audit_event SET action = 'R' WHERE seq = 1")
    code, out = cli("verify", "--public-key", str(pem_file))
    assert code == 1 and out.startswith(f"bad seq 1 event {chain[1]}")


def test_another_key_does_not_verify_checkpoints(chain: dict[int, str], cli: Cli, tmp_path: Path) -> None:
    other = AuditKeys.generate()
    pem_file = tmp_path / "other.pem"
    pem_file.write_text(other.verify_key.public_pem())
    code, out = cli("verify", "--public-key", str(pem_file))
    assert code == 1 and "untrusted key" in out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_mutation_is_detected(
    chain: dict[int, str], engine: Engine, keys: AuditKeys, data: st.DataObject
) -> None:
    seq = data.draw(st.sampled_from(sorted(chain)), label="seq")
    with engine.connect() as conn:
        original = bytes(
            conn.execute(select(audit_event.c.content).where(audit_event.c.seq == seq)).scalar_one()
        )
    position = data.draw(st.integers(0, len(original) - 1), label="position")
    value = data.draw(st.integers(0, 255).filter(lambda b: b != original[position]), label="byte")
    mutated = original[:position] + bytes([value]) + original[position + 1 :]
    _set_content(engine, seq, mutated)
    try:
        result = verify_engine(engine, keys)
        assert not result.ok
        assert (result.bad_seq, result.bad_event_id) == (seq, chain[seq])
    finally:
        _set_content(engine, seq, original)
    assert verify_engine(engine, keys).ok


def _set_content(engine: Engine, seq: int, content: bytes) -> None:
    with engine.begin() as conn, guards_lifted(conn):
        conn.execute(text("UPDATE audit_event SET content = :c WHERE seq = :s"), {"c": content, "s": seq})
