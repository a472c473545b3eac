"""Issue #5 end to end: after REST creates and the HL7 samples, no direct identifier is in a database row.

Runs the real HTTP server and the HL7 ingest service on both backends, then
reads the *raw rows* of every table that holds patient data (what a dump or a
stolen backup shows) and looks for the sample CCCD/BHYT numbers, phones and
e-mail addresses in clear.  The same records must still be found by
identifier and telecom, a conditional create must still match, duplicate HL7
deliveries must still be detected, and a key rotation with ``carebridge store
rotate-key`` + ``rewrap`` must leave everything readable under the new key,
with one AuditEvent per command.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, Table, select

from audit.schema import audit_event
from fhir_store.rewrap import keys_in_use
from fhir_store.schema import (
    hl7_journal,
    identifier_claim,
    resource_current,
    resource_version,
    search_date,
    search_reference,
    search_string,
    search_token,
)
from gateway.cli import main
from gateway.ingest import Ingestor
from tests.http.live import LiveServer, serve
from tests.mllp.conftest import BAD, GOOD_ORDER, sample

FHIR_JSON = "application/fhir+json"
CCCD = "https://id.carebridge.vn/cccd"
BHYT = "https://id.carebridge.vn/bhyt"
# From tests/fixtures/hl7v2 (phones also as the national number, which E.164 and local forms contain).
HL7_SECRETS = [
    "079085001234",
    "001190012345",
    "DN4797912345678",
    "912345678",
    "903111222",
    "977888999",
    "938555666",
    "938 555 666",
    "987654321",
    "901234567",
    "an.nguyen@example.vn",
    "anh.vo@example.vn",
]
REST_SECRETS = ["001099012345", "HC4010123456789", "987111222", "lan.tran@example.vn"]
SCANNED = (
    resource_current,
    resource_version,
    search_token,
    search_string,
    search_date,
    search_reference,
    identifier_claim,
    hl7_journal,
)


@pytest.fixture
def key_file(tmp_path: Path) -> str:
    """Its own store key file: this test rotates keys, the shared var/store-keys.json must not move."""
    return str(tmp_path / "store-keys.json")


@pytest.fixture
def live(database_url: str, key_file: str) -> Iterator[LiveServer]:
    with serve(database_url, store_key_file=key_file) as server:
        yield server


def rest_patient(mrn: str) -> dict[str, object]:
    return {
        "resourceType": "Patient",
        "identifier": [
            {"system": "https://id.carebridge.vn/mrn/REST", "value": mrn},
            {"system": CCCD, "value": "001099012345"},
            {"system": BHYT, "value": "HC4010123456789"},
        ],
        "name": [{"family": "Trần", "given": ["Thị", "Lan"], "text": "Trần Thị Lan"}],
        "telecom": [
            {"system": "phone", "value": "+84987111222"},
            {"system": "email", "value": "lan.tran@example.vn"},
        ],
        "gender": "female",
        "birthDate": "1992-05-17",
    }


def dump(engine: Engine, tables: tuple[Table, ...] = SCANNED) -> bytes:
    """Every value of every row of ``tables``, as the database holds it (text in UTF-8)."""
    out = bytearray()
    with engine.connect() as conn:
        for table in tables:
            for row in conn.execute(select(table)):
                for value in row:
                    if value is not None:
                        out += bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()
                    out += b"\x00"
    return bytes(out)


def found_in_clear(engine: Engine, secrets: list[str]) -> list[str]:
    data = dump(engine)
    return [s for s in secrets if s.encode() in data or s.encode("latin-1", "replace") in data]


def cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def search(live: LiveServer, **params: str) -> set[str]:
    bundle = httpx.get(f"{live.fhir_url}/Patient", params=params, headers=live.headers, timeout=30).json()
    return {e["resource"]["id"] for e in bundle.get("entry", [])}


def test_no_direct_identifier_in_clear_and_still_searchable(
    live: LiveServer, database_url: str, key_file: str
) -> None:
    engine = live.runtime.engine
    headers = {**live.headers, "Content-Type": FHIR_JSON}
    created = httpx.post(f"{live.fhir_url}/Patient", json=rest_patient("R-1"), headers=headers, timeout=30)
    assert created.status_code == 201, created.text
    rest_id = created.json()["id"]
    ingestor = Ingestor(live.runtime.store, live.runtime.settings)
    outcomes = {name: ingestor.handle(sample(name)) for name in [*GOOD_ORDER, *BAD]}
    assert {n: o.ack_code for n, o in outcomes.items() if n in GOOD_ORDER} == dict.fromkeys(GOOD_ORDER, "AA")

    assert found_in_clear(engine, HL7_SECRETS + REST_SECRETS) == []

    # the records are still found by identifier and telecom, in every form
    assert search(live, identifier=f"{CCCD}|001099012345") == {rest_id}
    assert search(live, identifier="HC4010123456789", phone="0987111222") == {rest_id}
    assert search(live, email="lan.tran@example.vn") == {rest_id}
    hl7_patient = search(live, identifier=f"{CCCD}|079085001234")
    assert len(hl7_patient) == 1
    assert search(live, identifier=f"{BHYT}|DN4797912345678") == hl7_patient
    assert search(live, phone="0977888999") == hl7_patient  # the A08's new phone
    assert len(search(live, email="anh.vo@example.vn", phone="+84 938 555 666")) == 1
    refused = httpx.get(f"{live.fhir_url}/Patient", params={"phone:contains": "0977"}, headers=live.headers)
    assert refused.status_code == 400 and refused.json()["resourceType"] == "OperationOutcome"
    # conditional create matches the existing record through the blinded claim
    again = httpx.post(
        f"{live.fhir_url}/Patient",
        json=rest_patient("R-2"),
        headers={**headers, "If-None-Exist": f"identifier={CCCD}|001099012345"},
        timeout=30,
    )
    assert again.status_code == 200 and again.json()["id"] == rest_id
    # duplicate detection of the (sealed) journal is unchanged; the journal still opens for replay
    duplicate = ingestor.handle(sample("adt_a04_register_outpatient"))
    assert duplicate.duplicate and duplicate.acks == outcomes["adt_a04_register_outpatient"].acks
    replayed = ingestor.replay(outcomes["bad_missing_patient_id"].journal_id or 0)
    assert replayed.ack_code == "AE"

    # rotation + rewrap: every row readable, under the new key, each command audited once
    keys = ("--database-url", database_url, "--key-file", key_file)
    assert cli("store", "rotate-key", *keys)[0] == 0
    code, out, err = cli("store", "rewrap", *keys, "--batch-size", "7")
    assert code == 0, err
    assert "under c2" in out and "content keys retired: c1" in out
    in_use = keys_in_use(engine)
    assert all(set(counts) == {"c2"} for counts in in_use.values()), in_use
    assert (
        httpx.get(f"{live.fhir_url}/Patient/{rest_id}", headers=live.headers).json()["telecom"][0]["value"]
        == "+84987111222"
    )
    assert search(live, identifier=f"{CCCD}|079085001234") == hl7_patient
    assert found_in_clear(engine, HL7_SECRETS + REST_SECRETS) == []
    code, out, _ = cli("store", "status", *keys)
    assert code == 0 and "content key c2 (current)" in out and "key content c1" in out and "retired" in out
    with engine.connect() as conn:
        events = [bytes(r[0]) for r in conn.execute(select(audit_event.c.content))]
    for subtype in (b'"store-rotate-key"', b'"store-rewrap"'):
        assert sum(subtype in e for e in events) == 1, subtype
