"""The at-rest scanner itself, and the blinded index rebuilt after migration 0017 (both backends).

The must-show scan runs in ``rights/test_side_tables_at_rest.py`` after the
whole flow (HL7 samples, REST writes, searches by name, address and birth
date, CRM traffic, privacy requests); here the scanner is shown to find a
planted value, and a store whose clear string rows were dropped by the
migration is reindexed on its next start and searchable again.
"""

from __future__ import annotations

import pytest
from sqlalchemy import delete, insert, select

from common import InvalidInput
from fhir_store.instants import parse_fhir_instant_range
from fhir_store.key_registry import open_cipher
from fhir_store.model import Create, RequestContext
from fhir_store.repository import FhirStore
from fhir_store.schema import hl7_journal, search_date, search_string
from fhir_store.search import parse_query
from tests.fhir_store.conftest import ctx, patient, store  # noqa: F401  (fixtures)
from tests.support.at_rest_scan import leaks, sample_secrets
from tests.support.store_keys import KEY_FILE


def test_the_scanner_finds_a_planted_value_in_any_table(store: FhirStore) -> None:  # noqa: F811
    assert "Nguyễn Văn An" in sample_secrets() and "12/03/1985" in sample_secrets()
    assert leaks(store.engine, sample_secrets()) == []
    with store.engine.begin() as conn:
        conn.execute(
            insert(hl7_journal).values(
                received_us=1, raw=b"x", status="failed", error="PID-7 12/03/1985 of Nguyễn Văn An"
            )
        )
    found = leaks(store.engine, sample_secrets())
    assert ("hl7_journal", "error", "Nguyễn Văn An") in found and (
        "hl7_journal",
        "error",
        "12/03/1985",
    ) in found


def test_names_and_birth_dates_are_indexed_blinded_and_rebuilt_after_migration(
    store: FhirStore,  # noqa: F811
    ctx: RequestContext,  # noqa: F811
) -> None:
    body = patient(
        "AT-1",
        name=[{"family": "Nguyễn", "given": ["Văn", "An"], "text": "Nguyễn Văn An"}],
        birthDate="1985-03-12",
    )
    body["address"] = [{"line": ["12 Lý Thường Kiệt"], "city": "Hà Nội"}]
    store.transact([Create(body)], ctx)
    with store.engine.connect() as conn:
        strings = [tuple(r) for r in conn.execute(select(search_string.c.norm, search_string.c.exact))]
        dates = [tuple(r) for r in conn.execute(select(search_date.c.low_us, search_date.c.high_us))]
    assert strings and all(v.startswith(f"{store.cipher.blind_kid}.") for row in strings for v in row)
    assert not any("nguyen" in v or "Nguyễn" in v for row in strings for v in row)
    assert dates and all(low % 1_000_000 == 0 for low, _ in dates)
    assert leaks(store.engine, sample_secrets()) == []

    def found(*params: tuple[str, str]) -> int:
        return len(store.search(parse_query("Patient", list(params))).matches)

    assert found(("name", "nguyen v")) == 1 and found(("address", "12 ly thuong kiet ha")) == 0
    assert found(("address", "12 ly thuong kiet")) == 1 and found(("name:contains", "guyễn")) == 1
    assert found(("birthdate", "1985-03")) == 1 and found(("birthdate", "lt1985-03-12")) == 0
    # migration 0017 drops the clear rows; the next start with the key rebuilds them blinded
    with store.engine.begin() as conn:
        conn.execute(delete(search_string))
        conn.execute(delete(search_date).where(search_date.c.param == "birthdate"))
    assert found(("name", "nguyen")) == 0
    open_cipher(store.engine, KEY_FILE)
    assert found(("name", "nguyen")) == 1 and found(("birthdate", "le1985-03-12")) == 1


BIRTH_DATES = ["1985-03-12", "1985-03", "1985", "1985-12-31", "1986-01-01", "1984-02-29", "2001-02-25"]
QUERY_DATES = ["1985-03-12", "1985-03", "1985", "1985-12-31", "1986", "1984-02-29T10:00:00+07:00"]
QUERY_DATES += ["1985-03-12T00:00:00Z", "1985-12-31T20:00:00-05:00", "0001-01-01", "9999-12-31"]


def _reference(stored: str, value: str) -> bool:
    """FHIR range semantics on clear values (what ``search._date_condition`` answered before)."""
    prefix = value[:2] if value[:2] in ("eq", "ne", "lt", "gt", "le", "ge") else "eq"
    low, high = parse_fhir_instant_range(stored)
    q_low, q_high = parse_fhir_instant_range(value[2:] if prefix != "eq" or value[:2] == "eq" else value)
    return {
        "eq": low >= q_low and high <= q_high,
        "ne": low < q_low or high > q_high,
        "lt": low < q_low,
        "gt": high > q_high,
        "le": low <= q_high,
        "ge": high >= q_low,
    }[prefix]


def test_blinded_birth_dates_answer_every_prefix_like_clear_ranges(
    store: FhirStore,  # noqa: F811
    ctx: RequestContext,  # noqa: F811
) -> None:
    results = store.transact(
        [Create(patient(f"BD-{i}", birthDate=d)) for i, d in enumerate(BIRTH_DATES)], ctx
    )
    ids = {r.stored.id: d for r, d in zip(results, BIRTH_DATES, strict=True)}  # type: ignore[union-attr]
    for prefix in ("", "eq", "ne", "lt", "gt", "le", "ge"):
        for value in QUERY_DATES:
            query = parse_query("Patient", [("birthdate", prefix + value), ("_count", "100")])
            got = {m.id for m in store.search(query).matches}
            assert got == {i for i, d in ids.items() if _reference(d, prefix + value)}, prefix + value


def test_long_prefixes_and_substrings_are_rechecked_after_decryption(
    store: FhirStore,  # noqa: F811
    ctx: RequestContext,  # noqa: F811
) -> None:
    texts = ["Nguyễn Thị Phương Thảo", "Nguyễn Thị Phương Anh", "Nguyễn Thị Phượng Thanh", "Phương Anh Trần"]
    bodies = [patient(f"LP-{i}", name=[{"text": t, "family": t.split()[0]}]) for i, t in enumerate(texts)]
    results = store.transact([Create(b) for b in bodies], ctx)
    ids = [r.stored.id for r in results]  # type: ignore[union-attr]

    def found(*params: tuple[str, str]) -> set[str]:
        query = parse_query("Patient", [*params, ("_count", "100")])
        return {m.id for m in store.search(query).matches}

    assert found(("name", "nguyen thi phuong t")) == {ids[0], ids[2]}  # 19 characters: re-checked
    assert found(("name", "nguyen thi phuong th")) == {ids[0], ids[2]}
    assert found(("name", "nguyen thi phuong tha")) == {ids[0], ids[2]}
    assert found(("name", "nguyen thi phuong thao")) == {ids[0]}
    assert found(("name:contains", "phuong anh")) == {ids[1], ids[3]}
    assert found(("name:contains", "uong a")) == {ids[1], ids[3]}
    assert found(("name:contains", "anh tr")) == {ids[3]}
    assert found(("name:contains", "ong")) == set(ids)  # 3 characters: one gram, exact
    # a re-checked search pages through a snapshot like any other
    first = store.search(parse_query("Patient", [("name", "nguyen thi phuong t"), ("_count", "1")]))
    assert len(first.matches) == 1 and first.has_next and first.page_token and first.total == 2
    counted = store.search(parse_query("Patient", [("name:contains", "uong a"), ("_summary", "count")]))
    assert counted.total == 2
    with pytest.raises(InvalidInput):
        found(("name:contains", "a"))
