"""Cost of a search parameter repeated N times (issue #17): planning and execution on a seeded store.

    .venv/bin/python -m bench.search_repeat --backend postgresql --patients 2000 --repeats 10,100,300

Each repetition is a different value (``name=a0&name=a1...``: AND of N string filters, so
nothing can be folded away), also for ``birthdate`` (dates) and ``identifier`` (tokens).
Prints wall time of the store search and, on PostgreSQL, EXPLAIN ANALYZE planning and
execution time.  Numbers go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bench.fhir_load import bench_database, seed
from common import SearchSettings
from fhir_store import FhirStore, make_engine, open_cipher, parse_query
from fhir_store.blind_index import blind_query
from fhir_store.search import _base_select
from gateway.registration import register_all

UNLIMITED = SearchSettings(max_parameters=100_000, max_values=100_000, max_query_chars=10_000_000)


def queries(repeats: int) -> dict[str, list[tuple[str, str]]]:
    return {
        "name": [("name", f"Ng{i:04d}") for i in range(repeats)],
        "birthdate": [("birthdate", f"ge{1900 + i % 100}-01-01") for i in range(repeats)],
        "identifier": [("identifier", f"urn:x|{i}") for i in range(repeats)],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="postgresql", choices=("sqlite", "postgresql"))
    parser.add_argument("--patients", type=int, default=2000)
    parser.add_argument("--repeats", default="10,100,300")
    args = parser.parse_args()
    register_all()
    key_file = str(Path(tempfile.mkdtemp(prefix="carebridge-bench-")) / "store-keys.json")
    import bench.fhir_load as fhir_load

    fhir_load.STORE_KEY_FILE = key_file
    with bench_database(args.backend) as url:
        seed(url, args.patients)
        engine = make_engine(url, pool_size=2)
        store = FhirStore(engine, cipher=open_cipher(engine, key_file), limits=UNLIMITED)
        print(f"backend={args.backend} patients={args.patients}")
        for repeats in (int(r) for r in args.repeats.split(",")):
            for kind, params in queries(repeats).items():
                query = parse_query("Patient", params, UNLIMITED)
                started = time.perf_counter()
                store.search(query)
                wall_ms = (time.perf_counter() - started) * 1000
                line = f"repeats={repeats:5d} {kind:10s} search {wall_ms:9.1f} ms"
                if args.backend == "postgresql":
                    stmt = _base_select(blind_query(query, store.cipher.blind)).limit(21)
                    compiled = stmt.compile(engine, compile_kwargs={"literal_binds": True})
                    with engine.connect() as conn:
                        plan = [r[0] for r in conn.exec_driver_sql(f"EXPLAIN ANALYZE {compiled}")]
                    timing = [p for p in plan if p.startswith(("Planning Time", "Execution Time"))]
                    line += "  " + "  ".join(timing)
                print(line, flush=True)
        engine.dispose()


if __name__ == "__main__":
    main()
