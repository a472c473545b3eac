"""fhir_store.journal: duplicate = sender + MSH-10 + keyed content digest (issue #15 item 1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from fhir_store import journal
from fhir_store.content_cipher import StoreCipher, StoreKeys
from fhir_store.database import make_engine
from fhir_store.schema import hl7_journal

MSH = b"MSH|^~\\&|HIS_VN|BVDK_HN|FHIRGATE|CRM|20261120083000+0700||ADT^A04^ADT_A01|HIS000001|P|2.5"
A04 = MSH + "\rPID|1||BN000123^^^BVDK_HN^MR||Nguyễn^An^Văn||19850312|M".encode()
A08 = MSH.replace(b"A04", b"A08") + "\rPID|1||BN000123^^^BVDK_HN^MR||Nguyễn^An^Văn||19850312|F".encode()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    eng = make_engine(database_url, pool_size=2)
    yield eng
    eng.dispose()


@pytest.fixture
def keys(tmp_path: Path) -> StoreKeys:
    return StoreKeys.create(str(tmp_path / "store-keys.json"))


def row(content: bytes | None, cipher: StoreCipher, **extra: Any) -> dict[str, Any]:
    return {
        "raw": content or b"",
        "peer": "10.0.0.5:40000",
        "sending_application": "HIS_VN",
        "sending_facility": "BVDK_HN",
        "control_id": "HIS000001",
        "message_type": "ADT^A04",
        "content": content,
        "cipher": cipher,
        **extra,
    }


def test_digest_is_keyed_and_never_the_content(keys: StoreKeys) -> None:
    cipher = StoreCipher(keys, keys.blind.current)
    digest = cipher.journal_digests(A04)[0]
    assert digest.startswith(f"{keys.blind.current}.") and len(digest) <= 64
    other = StoreKeys.create(str(Path(keys.location).with_name("other.json")))
    assert StoreCipher(other, other.blind.current).journal_digests(A04)[0] != digest
    assert b"BN000123" not in digest.encode()


def test_same_content_conflicts_other_content_is_a_reused_row(engine: Engine, keys: StoreKeys) -> None:
    cipher = StoreCipher(keys, keys.blind.current)
    first = journal.insert_message_entry(engine, **row(A04, cipher))
    assert first is not None and not first.reused
    assert journal.insert_message_entry(engine, **row(A04, cipher)) is None
    second = journal.insert_message_entry(engine, **row(A08, cipher))
    assert second is not None and second.reused
    found = journal.find_duplicate(engine, "HIS_VN", "BVDK_HN", "HIS000001", cipher, A08)
    assert found is not None and found.id == second.id and found.control_id_reused
    assert found.raw == A08


def test_undeduplicated_rows_neither_match_nor_count_as_reuse(engine: Engine, keys: StoreKeys) -> None:
    """A refused sender's attempt (dedup=False) is its own row, and later messages ignore it."""
    cipher = StoreCipher(keys, keys.blind.current)
    refused = journal.insert_message_entry(engine, **row(A04, cipher, dedup=False))
    again = journal.insert_message_entry(engine, **row(A04, cipher, dedup=False))
    assert refused is not None and again is not None and not refused.reused and not again.reused
    real = journal.insert_message_entry(engine, **row(A04, cipher))
    assert real is not None and not real.reused


def test_rows_from_before_digests_still_answer_their_key(engine: Engine, keys: StoreKeys) -> None:
    cipher = StoreCipher(keys, keys.blind.current)
    legacy = journal.insert_message_entry(engine, **row(A04, cipher))
    assert legacy is not None
    with engine.begin() as conn:  # what migration 0010 leaves on rows journaled before it
        conn.execute(update(hl7_journal).values(digest=""))
    assert journal.insert_message_entry(engine, **row(A04, cipher)) is None
    with engine.connect() as conn:
        assert conn.execute(select(hl7_journal.c.id)).scalars().all() == [legacy.id]


def test_a_retry_after_a_blind_key_rotation_is_still_a_duplicate(engine: Engine, keys: StoreKeys) -> None:
    old = StoreCipher(keys, keys.blind.current)
    first = journal.insert_message_entry(engine, **row(A04, old))
    assert first is not None
    new = StoreCipher(keys, keys.add_blind_key())
    assert journal.insert_message_entry(engine, **row(A04, new)) is None
    found = journal.find_duplicate(engine, "HIS_VN", "BVDK_HN", "HIS000001", new, A04)
    assert found is not None and found.id == first.id
    reused = journal.insert_message_entry(engine, **row(A08, new))
    assert reused is not None and reused.reused
