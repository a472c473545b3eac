"""Issue #18 item 1: truncating or rewriting the audit trail is caught by anchors kept outside the database.

Every checkpoint (every N events, at least every ``checkpoint_interval_s`` while
events are written, and at shutdown) is appended to an anchor file;
``carebridge audit verify --anchors FILE`` then fails when an anchored event is
missing or changed -- with the key file and in auditor mode (``--public-key``)
-- and reports events after the newest anchor as unanchored.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError

from audit import Anchor, Anchorer, read_anchors
from audit.anchors import append_anchor
from audit.chain import chain_hash
from audit.checkpoints import AuditKeys
from audit.hooks import AuditHook
from audit.rows import canonical
from audit.schema import audit_checkpoint, audit_event
from fhir_store.pipeline import HookPipeline
from fhir_store.repository import FhirStore
from tests.audit.conftest import CTX, create, encounter, patient
from tests.support.store_keys import cipher_for

Cli = Callable[..., tuple[int, str]]
Tamper = Callable[..., None]
EVENTS = 9  # patient, 4 x (encounter + read): checkpoints every 4 -> 4, 8, and 9 at shutdown


@pytest.fixture
def anchor_file(tmp_path: Path) -> Path:
    return tmp_path / "anchors" / "audit-anchors.jsonl"


def _store(engine: Engine, hook: AuditHook) -> FhirStore:
    return FhirStore(
        engine,
        pipeline=HookPipeline.of(("audit", "group", hook), ("audit", "access", hook)),
        cipher=cipher_for(engine),
    )


def _write(store: FhirStore, encounters: int = 4) -> None:
    pid = create(store, patient())
    for _ in range(encounters):
        store.read("Encounter", create(store, encounter(pid)), CTX)


@pytest.fixture
def anchored(engine: Engine, keys: AuditKeys, anchor_file: Path) -> dict[int, str]:
    """A service run that stops after 9 events: its shutdown checkpoint anchors them all."""
    hook = AuditHook(
        engine,
        keys,
        checkpoint_every=4,
        async_reads=False,
        checkpoint_interval_s=3600.0,  # the timer never fires here: only every-N and shutdown
        anchorer=Anchorer(anchor_file),
    )
    _write(_store(engine, hook))
    hook.close()
    with engine.connect() as conn:
        return {int(s): str(e) for s, e in conn.execute(select(audit_event.c.seq, audit_event.c.event_id))}


@pytest.fixture
def public_pem(keys: AuditKeys, tmp_path: Path) -> str:
    path = tmp_path / "audit-public.pem"
    path.write_text(keys.verify_key.public_pem())
    return str(path)


def _checkpoint_seqs(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [int(s) for s in conn.execute(select(audit_checkpoint.c.seq).order_by("seq")).scalars()]


def test_shutdown_checkpoint_is_signed_and_anchored(
    anchored: dict[int, str], engine: Engine, anchor_file: Path, keys: AuditKeys, cli: Cli
) -> None:
    assert len(anchored) == EVENTS
    assert _checkpoint_seqs(engine) == [4, 8, EVENTS]  # every N, then the shutdown checkpoint
    anchors = read_anchors(anchor_file)
    assert [a.seq for a in anchors] == [4, 8, EVENTS]
    assert all(a.signed_by({keys.key_id: keys.verify_key}) is None for a in anchors)
    assert stat.S_IMODE(os.stat(anchor_file).st_mode) == 0o600
    line = orjson.loads(anchor_file.read_text().splitlines()[-1])
    assert set(line) == {"seq", "hash", "signature", "key_id", "created_us", "time"}
    assert cli("verify", "--anchors", str(anchor_file)) == (
        0,
        f"ok {EVENTS} events\nunanchored 0 events after seq {EVENTS} (newest anchor)\n",
    )


def test_a_restart_resumes_after_the_files_last_line(
    anchored: dict[int, str], engine: Engine, anchor_file: Path
) -> None:
    """The file's last line says where to resume, even after a higher seq of a rolled-back chain."""
    ours = anchor_file.read_text()
    rolled_back = Anchor(seq=999, hash=b"\x01" * 32, signature=b"\x02" * 64, key_id="k-old", created_us=1)
    anchor_file.write_text(rolled_back.line() + "\n" + ours)
    assert Anchorer(anchor_file).export(engine) == 0  # ends at this database's checkpoint 9
    assert anchor_file.read_text() == rolled_back.line() + "\n" + ours
    append_anchor(anchor_file, [rolled_back])
    assert Anchorer(anchor_file).export(engine) == 3  # ends elsewhere: 4, 8 and 9 anchored again
    assert [a.seq for a in read_anchors(anchor_file)][-4:] == [999, 4, 8, EVENTS]


def test_checkpoint_every_interval_while_events_are_written(
    engine: Engine, keys: AuditKeys, anchor_file: Path
) -> None:
    """No shutdown here: the checkpointer thread alone signs and anchors the head after the interval."""
    hook = AuditHook(
        engine, keys, checkpoint_every=1000, async_reads=False, checkpoint_interval_s=0.05,
        anchorer=Anchorer(anchor_file),
    )  # fmt: skip
    try:
        _write(_store(engine, hook), encounters=1)  # 3 events, far below every-N
        deadline = time.monotonic() + 30
        while not (anchor_file.exists() and read_anchors(anchor_file)) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [a.seq for a in read_anchors(anchor_file)] == [3]
        assert _checkpoint_seqs(engine) == [3]
    finally:
        hook.close()
    assert [a.seq for a in read_anchors(anchor_file)] == [3]  # nothing new: no second anchor


def _drop_from(seq: int) -> tuple[str, ...]:
    return (
        f"DELETE FROM audit_event_key WHERE seq >= {seq}",
        f"DELETE FROM audit_event WHERE seq >= {seq}",
        f"DELETE FROM audit_checkpoint WHERE seq >= {seq}",
    )


def _rewrite_last(engine: Engine, tamper: Tamper, seq: int) -> None:
    """Edit the event at ``seq`` and recompute its hash (all an attacker without the key can do)."""
    with engine.connect() as conn:
        row = conn.execute(select(audit_event).where(audit_event.c.seq == seq)).one()
    event = orjson.loads(row.content)
    event["outcomeDesc"] = "nothing to see"
    content = canonical(event)
    tamper(
        "UPDATE audit_event SET content = :c, hash = :h WHERE seq = :s",
        f"DELETE FROM audit_checkpoint WHERE seq >= {seq}",  # its checkpoint signed the old hash
        params={"c": content, "h": chain_hash(bytes(row.prev_hash), content), "s": seq},
    )


def _swap(engine: Engine, tamper: Tamper, a: int, b: int) -> None:
    """Swap two whole events (columns and search keys) and re-link the chain from ``a`` on.

    The checkpoints are removed (they signed the old chain); the MACs cannot be
    recomputed without the key file.
    """
    with engine.connect() as conn:
        rows = {
            int(r.seq): r._asdict() for r in conn.execute(select(audit_event).order_by(audit_event.c.seq))
        }
        keys = conn.execute(
            text(f"SELECT seq, key, patient FROM audit_event_key WHERE seq IN ({a}, {b})")
        ).all()
    prev = bytes(rows[a]["prev_hash"])
    moved = ["event_id", *(c for c in rows[a] if c not in ("seq", "event_id", "prev_hash", "hash", "mac"))]
    rows[a], rows[b] = {**rows[b], "seq": a}, {**rows[a], "seq": b}
    statements = [
        "DELETE FROM audit_checkpoint",
        f"DELETE FROM audit_event_key WHERE seq IN ({a}, {b})",
        f"UPDATE audit_event SET event_id = 'swap-' || seq WHERE seq IN ({a}, {b})",  # unique ids
    ]
    params: dict[str, object] = {}
    for i, (seq, key, is_patient) in enumerate(keys):
        statements.append(f"INSERT INTO audit_event_key (seq, key, patient) VALUES (:ks{i}, :k{i}, :kp{i})")
        params.update({f"ks{i}": b if int(seq) == a else a, f"k{i}": key, f"kp{i}": bool(is_patient)})
    for s in range(a, max(rows) + 1):
        content = bytes(rows[s]["content"])
        digest = chain_hash(prev, content)
        names = moved if s in (a, b) else ["content"]
        sets = ", ".join(f"{n} = :{n}_{s}" for n in names)
        statements.append(
            f"UPDATE audit_event SET {sets}, prev_hash = :prev_{s}, hash = :hash_{s} WHERE seq = {s}"
        )
        params.update({f"{n}_{s}": rows[s][n] for n in names})
        params.update({f"prev_{s}": prev, f"hash_{s}": digest})
        prev = digest
    tamper(*statements, params=params)


ATTACKS = ["tail-deleted", "everything-deleted", "edited-after-last-checkpoint", "rows-swapped"]


@pytest.mark.parametrize("attack", ATTACKS)
@pytest.mark.parametrize("mode", ["key-file", "public-key"])
def test_verify_with_anchors_catches_what_the_database_alone_cannot(
    anchored: dict[int, str],
    engine: Engine,
    tamper: Tamper,
    cli: Cli,
    anchor_file: Path,
    public_pem: str,
    attack: str,
    mode: str,
) -> None:
    key = ("--public-key", public_pem) if mode == "public-key" else ()
    if attack == "tail-deleted":
        tamper(*_drop_from(7))
    elif attack == "everything-deleted":
        tamper(*_drop_from(1))
    elif attack == "edited-after-last-checkpoint":
        _rewrite_last(engine, tamper, EVENTS)
    else:
        _swap(engine, tamper, 2, 3)  # an encounter's create and its read trade places
    code, out = cli("verify", *key)
    if attack in ("tail-deleted", "everything-deleted") or mode == "public-key":
        assert code == 0, out  # what issue #18 found: the database alone says ok
    else:
        assert "MAC invalid" in out, out  # the key file's MACs catch a rewrite even without anchors
    code, out = cli("verify", *key, "--anchors", str(anchor_file))
    assert code == 1, out
    expected = {
        "tail-deleted": "missing: anchored event seq 9 is gone, the chain ends at seq 6",
        "everything-deleted": "missing: anchored event seq 9 is gone, the chain ends at seq 0",
        "edited-after-last-checkpoint": f"bad seq {EVENTS}",
        "rows-swapped": "bad seq 4" if mode == "public-key" else "bad seq 2",
    }[attack]
    assert expected in out, out
    if attack in ("edited-after-last-checkpoint", "rows-swapped") and mode == "public-key":
        assert "differs from the anchor" in out


def test_events_after_the_newest_anchor_are_reported_unanchored(
    anchored: dict[int, str], engine: Engine, keys: AuditKeys, tamper: Tamper, cli: Cli,
    anchor_file: Path, public_pem: str,
) -> None:  # fmt: skip
    hook = AuditHook(engine, keys, async_reads=False)  # no checkpointer: a crash before the next one
    _write(_store(engine, hook), encounters=1)
    hook.close()
    report = f"ok {EVENTS + 3} events\nunanchored 3 events after seq {EVENTS} (newest anchor)\n"
    assert cli("verify", "--anchors", str(anchor_file)) == (0, report)
    assert cli("verify", "--anchors", str(anchor_file), "--strict") == (1, report)
    # In auditor mode an edit there cannot be told from the original: it is reported, and --strict fails.
    _rewrite_last(engine, tamper, EVENTS + 3)
    assert cli("verify", "--public-key", public_pem, "--anchors", str(anchor_file)) == (0, report)
    assert cli("verify", "--public-key", public_pem, "--anchors", str(anchor_file), "--strict")[0] == 1


def test_forged_anchor_is_refused(anchored: dict[int, str], anchor_file: Path, cli: Cli) -> None:
    other = AuditKeys.generate()
    forged = Anchor(EVENTS + 1, b"\x00" * 32, b"", other.key_id, 1)
    forged = Anchor(forged.seq, forged.hash, other.sign(forged.seq, forged.hash, 1), other.key_id, 1)
    with anchor_file.open("a") as handle:
        handle.write(forged.line() + "\n")
    code, out = cli("verify", "--anchors", str(anchor_file))
    assert code == 1 and "untrusted key" in out, out
    anchor_file.write_text("not json\n")
    code, out = cli("verify", "--anchors", str(anchor_file))
    assert code == 1 and out == ""


def test_append_only_triggers(anchored: dict[int, str], engine: Engine, backend: str) -> None:
    """Both backends refuse UPDATE and DELETE of audit rows (SQLite: migration 0015)."""
    for statement in (
        "UPDATE audit_event SET outcome = '12' WHERE seq = 1",
        "DELETE FROM audit_event WHERE seq = 9",
        "DELETE FROM audit_event_key",
        "UPDATE audit_checkpoint SET seq = 100",
        "DELETE FROM audit_checkpoint",
    ):
        with pytest.raises(DBAPIError) as info, engine.begin() as conn:
            conn.execute(text(statement))
        assert "append-only" in str(info.value), backend
