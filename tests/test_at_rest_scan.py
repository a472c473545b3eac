"""The at-rest scanner itself, and the blinded index rebuilt after migration 0017 (both backends).

The must-show scan runs in ``rights/test_side_tables_at_rest.py`` after the
whole flow (HL7 samples, REST writes, searches by name, address and birth
date, CRM traffic, privacy requests); here the scanner is shown to find a
planted value, and a store whose clear string rows were dropped by the
migration is reindexed on its next start and searchable again.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select

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
    body = patient("AT-1", name=[{"family": "Nguyễn", "given": ["Văn", "An"], "text": "Nguyễn Văn An"}], birthDate="1985-03-12")
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
