"""``carebridge audit export`` and :func:`search_audit`; exports are audited themselves."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import orjson
from sqlalchemy import Engine

from audit.checkpoints import AuditKeys
from audit.export import CSV_COLUMNS, search_audit
from audit.verify import verify_engine
from fhir_store.instants import format_instant, now_us
from fhir_store.repository import FhirStore
from tests.audit.conftest import CTX, create, encounter, patient

Cli = Callable[..., tuple[int, str]]


def _setup(store: FhirStore) -> tuple[str, str]:
    p1, p2 = create(store, patient("Trần")), create(store, patient("Lê"))
    e1 = create(store, encounter(p1))
    store.read("Encounter", e1, CTX)
    store.read("Patient", p2, CTX)
    return p1, p2


def test_ndjson_export_for_one_patient_is_audited(
    store: FhirStore, cli: Cli, engine: Engine, keys: AuditKeys
) -> None:
    p1, _p2 = _setup(store)
    code, out = cli("export", "--format", "ndjson", "--patient", p1)
    assert code == 0
    events = [orjson.loads(line) for line in out.splitlines()]
    assert [e["subtype"][0]["code"] for e in events] == ["create", "create", "read"]
    # the export appended its own event (type 110106, subtype export) naming the patient
    with engine.connect() as conn:
        found, total = search_audit(conn, type="110106")
    assert total == 1
    export = orjson.loads(found[0])
    assert export["subtype"][0]["code"] == "export"
    assert any(e.get("what", {}).get("reference") == f"Patient/{p1}" for e in export["entity"])
    assert verify_engine(engine, keys).ok


def test_csv_export_with_date_window(store: FhirStore, cli: Cli) -> None:
    start = now_us()
    _setup(store)
    code, out = cli("export", "--format", "csv", "--since", format_instant(start - 1000))
    assert code == 0
    rows = list(csv.reader(io.StringIO(out)))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 1 + 5
    code, out = cli("export", "--format", "csv", "--until", "2000-01-01")
    assert list(csv.reader(io.StringIO(out))) == [list(CSV_COLUMNS)]
    code, _out = cli("export", "--format", "csv", "--since", "not-a-date")
    assert code == 2


def test_search_audit_filters_and_paging(store: FhirStore, engine: Engine) -> None:
    p1, p2 = _setup(store)
    with engine.connect() as conn:
        assert search_audit(conn, patient=f"Patient/{p2}")[1] == 2
        assert search_audit(conn, action="R")[1] == 2
        assert search_audit(conn, agent="his-bvdk", outcome="0")[1] == 5
        assert search_audit(conn, entity=f"Patient/{p1}")[1] == 1
        assert search_audit(conn, purpose="TREAT", subtype="read")[1] == 2
        page, total = search_audit(conn, count=2, offset=1)
        assert total == 5 and len(page) == 2
        newest = orjson.loads(search_audit(conn, count=1)[0][0])
        assert newest["subtype"][0]["code"] == "read"
        assert search_audit(conn, since_us=now_us() + 10**9)[1] == 0
