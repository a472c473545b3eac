"""The outbox statement: events and pseudonym links together, ``seq`` in commit order."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from consent.keys import KeyStore
from crm_bridge.delivery import read_feed
from crm_bridge.feed_start import register_feed
from crm_bridge.outbox import PendingEvent, append_events, pseudonym_link, resolve_pseudonym
from crm_bridge.schema import crm_pseudonym
from fhir_store.database import make_engine, writer

CRM = "crm-a"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url, pool_size=4)
    with eng.begin() as conn:  # the CRM is registered before any event: it reads them all
        register_feed(conn, CRM)
    yield eng
    eng.dispose()


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore.load_or_create(str(tmp_path / "crm-keys.json"))


def _event(n: int, pseudonym: str | None = None) -> PendingEvent:
    return PendingEvent(CRM, "test.event", f"p{n}", pseudonym, {"n": n})


def test_links_are_recorded_once_with_or_without_events(engine: Engine, keys: KeyStore) -> None:
    first, second = pseudonym_link(keys, CRM, "p1"), pseudonym_link(keys, CRM, "p2")
    with writer(engine).begin() as conn:
        append_events(conn, keys, [_event(1, first.pseudonym)], [first, first])
    with writer(engine).begin() as conn:  # the link exists already; a new one comes without events
        append_events(conn, keys, [], [first, second])
    with writer(engine).begin() as conn:
        append_events(conn, keys, [_event(2), _event(3)], [second])
    with engine.connect() as conn:
        rows = conn.execute(select(crm_pseudonym.c.pseudonym, crm_pseudonym.c.patient_id)).all()
        assert sorted((str(p), str(i)) for p, i in rows) == sorted(
            [(first.pseudonym, "p1"), (second.pseudonym, "p2")]
        )
        assert resolve_pseudonym(conn, CRM, second.pseudonym) == "p2"
        assert (
            first.pseudonym.split(".", 1)[0] == conn.execute(select(crm_pseudonym.c.key_id)).scalars().first()
        )
    feed = read_feed(engine, keys, CRM, 0, 100)
    assert [e.body["data"]["n"] for e in feed] == [1, 2, 3]
    assert [e.seq for e in feed] == sorted(e.seq for e in feed)


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite serializes writers with BEGIN IMMEDIATE
def test_a_later_commit_never_gets_a_smaller_seq(engine: Engine, keys: KeyStore) -> None:
    """The feed reader moves a cursor past ``seq``: an event committed after it must sort after it."""
    done: list[int] = []

    def second_writer() -> None:
        with engine.begin() as conn:
            append_events(conn, keys, [_event(2)])
        done.append(2)

    with engine.begin() as conn:
        append_events(conn, keys, [_event(1)], [pseudonym_link(keys, CRM, "p1")])
        other = threading.Thread(target=second_writer)
        other.start()
        other.join(0.5)
        assert other.is_alive(), "the second append must wait for the outbox lock"
        assert done == []
    other.join(10)
    feed = read_feed(engine, keys, CRM, 0, 100)
    assert [(e.body["data"]["n"]) for e in sorted(feed, key=lambda e: e.seq)] == [1, 2]
