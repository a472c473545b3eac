"""Several appends in one transaction, rolled-back appends, and the head a transaction holds."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import Engine, text

from audit.chain import ChainWriter
from audit.checkpoints import AuditKeys
from audit.events import build_event
from audit.verify import verify_engine
from tests.audit.conftest import CTX


def _event(n: int) -> dict[str, object]:
    return build_event(context=CTX, event_type="110112", subtype="query", query=f"q={n}", recorded_us=n)


def test_appends_in_one_transaction_chain_on_each_other(engine: Engine, keys: AuditKeys) -> None:
    writer = ChainWriter(keys, checkpoint_every=1000)
    with engine.begin() as conn:
        assert writer.append(conn, [_event(1)]) == 1
        assert writer.append(conn, [_event(2), _event(3)]) == 3
        assert writer.append(conn, [_event(4)]) == 4
    with engine.begin() as conn:  # a new transaction reads the committed head
        assert writer.append(conn, [_event(5)]) == 5
    result = verify_engine(engine, keys)
    assert result.ok, result.reason
    assert result.events == 5


def test_a_rolled_back_append_leaves_no_trace_in_the_next_transaction(
    engine: Engine, keys: AuditKeys
) -> None:
    writer = ChainWriter(keys, checkpoint_every=1000)
    with engine.begin() as conn:
        writer.append(conn, [_event(1)])
    with pytest.raises(RuntimeError), engine.begin() as conn:
        assert writer.append(conn, [_event(2), _event(3)]) == 3
        raise RuntimeError("the change failed after its audit rows were written")
    with engine.begin() as conn:  # same pooled connection, new transaction: seq 2 again
        assert writer.append(conn, [_event(4)]) == 2
        assert writer.append(conn, [_event(5)]) == 3
    result = verify_engine(engine, keys)
    assert result.ok, result.reason
    assert result.events == 3


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite reads the head locally, no round trip
def test_postgres_second_append_reuses_the_held_head(engine: Engine, keys: AuditKeys) -> None:
    writer = ChainWriter(keys, checkpoint_every=1000)
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL track_functions = 'all'"))
        writer.append(conn, [_event(1)])
        writer.append(conn, [_event(2)])
        writer.append(conn, [_event(3)])
        calls = conn.execute(
            text("SELECT pg_stat_get_xact_function_calls('carebridge_audit_head'::regproc)")
        ).scalar()
    assert calls == 1  # the lock and head were read once for three appends

    # Another writer waits for the lock the first transaction holds, then chains after it.
    results: list[int] = []
    with engine.begin() as conn:
        writer.append(conn, [_event(4)])
        other = threading.Thread(target=lambda: results.append(_append_alone(engine, writer)))
        other.start()
        other.join(0.5)
        assert other.is_alive(), "the second writer must wait for the chain lock"
        writer.append(conn, [_event(5)])
    other.join(10)
    assert results == [6]
    result = verify_engine(engine, keys)
    assert result.ok, result.reason
    assert result.events == 6


def _append_alone(engine: Engine, writer: ChainWriter) -> int:
    with engine.begin() as conn:
        return writer.append(conn, [_event(6)])
