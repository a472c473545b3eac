"""Blinded name/address/birth-date index (issue #18 item 5): write cost, index size, search latency.

    .venv/bin/python -m bench.blinded_search --backend sqlite --patients 2000
    PYTHONPATH=/path/to/older/checkout .venv/bin/python -m bench.blinded_search ...   # the "before"

Seeds synthetic Vietnamese patients (``bench.fhir_load.seed``), then prints the seeding
time, the rows and stored bytes of ``search_string``/``search_date``/``search_token``, and
the median wall time of name, address and birth-date searches through ``FhirStore.search``.
Numbers go to docs/benchmarks.md ("Blinded string and date index").
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from bench.fhir_load import bench_database, seed
from fhir_store import FhirStore, make_engine, open_cipher, parse_query
from fhir_store.schema import search_date, search_string, search_token
from gateway.registration import register_all

QUERIES: dict[str, list[tuple[str, str]]] = {
    "name prefix (4)": [("name", "nguy")],
    "name prefix (19, re-checked)": [("name", "nguyen van an khoa")],
    "family :exact": [("family:exact", "Trần")],
    "name :contains (3)": [("name:contains", "uye")],
    "name :contains (6, re-checked)": [("name:contains", "en van")],
    "address prefix": [("address", "12 le loi")],
    "birthdate eq day": [("birthdate", "1985-03-12")],
    "birthdate ge day": [("birthdate", "ge2015-06-15")],
    "birthdate lt month": [("birthdate", "lt1945-07")],
    "birthdate year": [("birthdate", "1985")],
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql"))
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    register_all()
    key_file = str(Path(tempfile.mkdtemp(prefix="carebridge-bench-")) / "store-keys.json")
    import bench.fhir_load as fhir_load

    fhir_load.STORE_KEY_FILE = key_file
    with bench_database(args.backend) as url:
        started = time.perf_counter()
        seed(url, args.patients)
        seeded = time.perf_counter() - started
        engine = make_engine(url, pool_size=2)
        store = FhirStore(engine, cipher=open_cipher(engine, key_file))
        print(f"backend={args.backend} patients={args.patients} seed {seeded:.2f} s")
        with engine.connect() as conn:
            for table, columns in (
                (search_string, ("norm", "exact")),
                (search_date, ()),
                (search_token, ("code",)),
            ):
                rows = conn.execute(select(func.count()).select_from(table)).scalar_one()
                text = sum(
                    conn.execute(select(func.coalesce(func.sum(func.length(table.c[c])), 0))).scalar_one()
                    for c in columns
                )
                print(f"{table.name:14s} rows {rows:8d}  text bytes {text:10d}")
        for label, params in QUERIES.items():
            query = parse_query("Patient", [*params, ("_count", "20")])
            times, found = [], 0
            for _ in range(args.rounds):
                begun = time.perf_counter()
                found = len(store.search(query).matches)
                times.append((time.perf_counter() - begun) * 1000)
            print(f"{label:32s} {statistics.median(times):8.2f} ms  ({found} on page 1)")
        engine.dispose()


if __name__ == "__main__":
    main()
