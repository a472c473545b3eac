"""What durable read audit costs: read latency and throughput with no audit, buffered and durable audit.

    .venv/bin/python -m bench.read_audit_latency --backend both --rounds 3 --reads 600 --threads 1 4

Why: issue #18 item 6 asks that a read be answered only once its AuditEvent is
committed (``audit.hooks``, setting ``CAREBRIDGE_AUDIT_DURABLE_READS``).  The
request thread then waits for a group commit; this measures what that wait adds
per read (median and 95th percentile, µs) and what it takes from throughput, at
one client and at several concurrent clients (whose reads share commits).  Store
level, same database and engine for the three modes, runs interleaved, medians of
``--rounds``.  Numbers go to docs/benchmarks.md ("Durable read audit").
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from audit import AuditHook, AuditKeys
from bench.audit_overhead import CTX, context, machine
from bench.fhir_load import synthetic_patient
from fhir_store import Create, FhirStore, HookPipeline, make_engine, open_cipher, upgrade

MODES = ("off", "buffered", "durable")


def run_backend(url: str, *, rounds: int, reads: int, seed: int, threads: int) -> dict[str, float]:
    upgrade(url)
    engine = make_engine(url, pool_size=max(4, threads * 2))
    keys = AuditKeys.load_or_create(str(Path(tempfile.mkdtemp()) / "audit.pem"))
    cipher = open_cipher(engine, str(Path(tempfile.mkdtemp()) / "store-keys.json"))
    hooks = {"buffered": AuditHook(engine, keys, durable_reads=False), "durable": AuditHook(engine, keys)}
    stores = {"off": FhirStore(engine, read_autocommit=True, cipher=cipher)}
    for mode, hook in hooks.items():
        pipeline = HookPipeline.of(("audit", "group", hook), ("audit", "access", hook))
        stores[mode] = FhirStore(engine, pipeline=pipeline, read_autocommit=True, cipher=cipher)
    ids = [
        r.stored.id
        for i in range(seed)
        for r in stores["off"].transact([Create(synthetic_patient(i, "SEED"))], CTX)
        if r.stored is not None
    ]
    rng = random.Random(11)
    found: dict[str, list[float]] = {f"{k}-{m}": [] for k in ("p50", "p95", "rate") for m in MODES}
    for rnd in range(rounds):
        for mode in MODES if rnd % 2 == 0 else tuple(reversed(MODES)):
            store = stores[mode]
            picks = [rng.choice(ids) for _ in range(reads)]
            latencies: list[float] = []

            def read(
                i: int, store: FhirStore = store, picks: list[str] = picks, out: list[float] = latencies
            ) -> None:
                begin = time.perf_counter()
                store.read("Patient", picks[i], context())
                out.append(time.perf_counter() - begin)

            begin = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(read, range(reads)))
            for hook in hooks.values():
                hook.flush()  # buffered events are written inside the timed section too
            found[f"rate-{mode}"].append(reads / (time.perf_counter() - begin))
            ordered = sorted(latencies)
            found[f"p50-{mode}"].append(ordered[len(ordered) // 2] * 1e6)
            found[f"p95-{mode}"].append(ordered[int(len(ordered) * 0.95)] * 1e6)
    for hook in hooks.values():
        hook.close()
    engine.dispose()
    return {key: statistics.median(values) for key, values in found.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reads", type=int, default=600)
    parser.add_argument("--seed", type=int, default=200)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    print(f"machine (before): {machine()}", flush=True)
    print("| backend / threads | mode | p50 µs | p95 µs | reads/s |")
    print("|---|---|---:|---:|---:|")
    for backend in ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]:
        for threads in args.threads:
            params = dict(rounds=args.rounds, reads=args.reads, seed=args.seed, threads=threads)
            if backend == "sqlite":
                row = run_backend(f"sqlite:///{tempfile.mkdtemp(prefix='cb-bench-')}/bench.db", **params)
            else:
                from tests.support.postgres import PostgresCluster

                with PostgresCluster.start() as cluster:
                    row = run_backend(cluster.create_database(f"bench_{uuid.uuid4().hex[:8]}"), **params)
            for mode in MODES:
                print(
                    f"| {backend} / {threads} | {mode} | {row[f'p50-{mode}']:.0f} | "
                    f"{row[f'p95-{mode}']:.0f} | {row[f'rate-{mode}']:.0f} |",
                    flush=True,
                )
    print(f"machine (after): {machine()}")


if __name__ == "__main__":
    main()
