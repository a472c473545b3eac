"""What the audit trail costs: store-level create and read throughput with the audit hook on vs off.

    .venv/bin/python -m bench.audit_overhead --backend both --rounds 5 --creates 400 --reads 2000
    .venv/bin/python -m bench.audit_overhead --per-event --rounds 5 --creates 300 --reads 3000

Why store level: the issue's budget (audit ≤ 25% of read and create
throughput) is about the audit work itself -- building the BALP event, the
canonical JSON, the chain lock, the hash, the extra INSERTs -- and HTTP/JSON
framing would only dilute it.  Both configurations use the *same* database
and engine; the "on" store carries the :class:`~audit.hooks.AuditHook` exactly
as ``gateway.runtime`` wires it (changes in the write transaction, reads
buffered to the background appender), the "off" store carries no hook.

Both stores read by id without BEGIN/COMMIT on PostgreSQL (``read_autocommit``
as ``gateway.runtime`` sets it when reads are buffered), and every operation
gets its own :class:`RequestContext` with a new request id, as every HTTP
request does: a shared context would let per-context caches hit where
production misses.

Runs are interleaved (off, on, on, off, ...) so drift in the machine's load
hits both sides alike, and each figure is the median of ``--rounds`` runs.
Besides ops/s (wall clock, noisy on a shared machine) every run records the
process CPU per operation (``time.process_time``: all threads, so the
background appender counts; the PostgreSQL server's CPU does not).
Buffered read events are flushed *inside* the timed section: the appender's
commits are part of what reads cost.  ``--threads`` > 1 runs that many
client threads against the store (the chain lock is what concurrency would
expose).  PostgreSQL is a throwaway cluster (``tests.support.postgres``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import platform
import random
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from audit import AuditHook, AuditKeys
from bench.fhir_load import synthetic_patient
from fhir_store import (
    Create,
    FhirStore,
    HookPipeline,
    RequestContext,
    ResourceChange,
    StoredResource,
    for_writing,
    make_engine,
    open_cipher,
    upgrade,
)

CTX = RequestContext(
    request_id="bench",
    client_id="bench-client",
    role="his_integration",
    channel="rest",
    source_address="10.0.0.1",
    purpose_of_use="TREAT",
)
_REQUEST_IDS = itertools.count()


def context() -> RequestContext:
    """A per-request context, as ``gateway.http.principal`` builds one for every request."""
    return dataclasses.replace(CTX, request_id=f"bench-{next(_REQUEST_IDS):012d}")


def _timed(threads: int, n: int, op: Callable[[int], None], after: Callable[[], None]) -> tuple[float, float]:
    """(ops/s, CPU µs per op) for ``n`` calls of ``op`` on ``threads`` threads, ``after`` inside."""
    begin, cpu = time.perf_counter(), time.process_time()
    if threads == 1:
        for i in range(n):
            op(i)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(op, range(n)))
    after()
    return n / (time.perf_counter() - begin), (time.process_time() - cpu) / n * 1e6


def run_backend(
    url: str, *, rounds: int, creates: int, reads: int, seed: int, threads: int
) -> dict[str, float]:
    upgrade(url)
    engine = make_engine(url, pool_size=max(4, threads * 2))
    keys = AuditKeys.load_or_create(str(Path(tempfile.mkdtemp()) / "audit.pem"))
    hook = AuditHook(engine, keys)
    cipher = open_cipher(engine, str(Path(tempfile.mkdtemp()) / "store-keys.json"))
    stores = {
        "off": FhirStore(engine, read_autocommit=True, cipher=cipher),
        "on": FhirStore(
            engine,
            pipeline=HookPipeline.of(("audit", "group", hook), ("audit", "access", hook)),
            read_autocommit=True,
            cipher=cipher,
        ),
    }
    ids = [
        r.stored.id
        for i in range(seed)
        for r in stores["off"].transact([Create(synthetic_patient(i, "SEED"))], CTX)
        if r.stored is not None
    ]
    counter = iter(range(10**9))
    lock = threading.Lock()
    keys_ = [f"{k}-{m}" for k in ("create", "read") for m in ("off", "on")]
    results: dict[str, list[float]] = {k: [] for k in keys_ + [f"cpu-{k}" for k in keys_]}
    rng = random.Random(7)
    for rnd in range(rounds):
        order = ("off", "on") if rnd % 2 == 0 else ("on", "off")
        for mode in order:
            store = stores[mode]
            run = uuid.uuid4().hex[:6]

            def create(_i: int, store: FhirStore = store, run: str = run) -> None:
                with lock:
                    n = next(counter)
                store.transact([Create(synthetic_patient(n, f"C{run}"))], context())

            rate, cpu = _timed(threads, creates, create, hook.flush)
            results[f"create-{mode}"].append(rate)
            results[f"cpu-create-{mode}"].append(cpu)
        for mode in order:
            store = stores[mode]
            picks = [rng.choice(ids) for _ in range(reads)]

            def read(i: int, store: FhirStore = store, picks: list[str] = picks) -> None:
                store.read("Patient", picks[i], context())

            rate, cpu = _timed(threads, reads, read, hook.flush)
            results[f"read-{mode}"].append(rate)
            results[f"cpu-read-{mode}"].append(cpu)
    hook.close()
    engine.dispose()
    return {key: statistics.median(values) for key, values in results.items()}


def per_event(url: str, *, rounds: int, reads: int, creates: int) -> dict[str, float]:
    """The audit's own CPU per event, through the hook's API only (so it also runs on older code).

    * ``request``: :meth:`AuditHook.on_access` of a buffered read, on the calling thread;
    * ``appender``: the appender thread's CPU per event it writes; accesses are paced at
      ~3,000/s so that its batches look like the store benchmark's (~60-100 per 20 ms);
    * ``create``: :meth:`AuditHook.on_changes` for one created Patient, in a write
      transaction that a first statement already began (as the store's writes do).
    """
    upgrade(url)
    engine = make_engine(url, pool_size=4)
    hook = AuditHook(engine, AuditKeys.load_or_create(str(Path(tempfile.mkdtemp()) / "audit.pem")))
    appender = {"cpu": 0.0, "events": 0.0}
    write_batch = hook._write_batch

    def timed_batch(batch: list[Any]) -> None:
        begin = time.thread_time()
        write_batch(batch)
        appender["cpu"] += time.thread_time() - begin
        appender["events"] += len(batch)

    hook._write_batch = timed_batch  # type: ignore[method-assign]
    body = b'{"resourceType":"Patient","id":"p","name":[{"family":"Nguyen"}]}'
    results: dict[str, list[float]] = {"request": [], "appender": [], "create": []}
    for rnd in range(rounds):
        appender.update(cpu=0.0, events=0.0)
        spent = 0.0
        for i in range(reads):
            stored = [StoredResource("Patient", f"p{i % 500}", 1, 0, False, body)]
            ctx = context()
            begin = time.thread_time()
            hook.on_access(None, "read", stored, ctx, None)  # type: ignore[arg-type]  # buffered: no conn
            spent += time.thread_time() - begin
            time.sleep(0.0002)
        hook.flush()
        results["request"].append(spent / reads * 1e6)
        results["appender"].append(appender["cpu"] / appender["events"] * 1e6)
        spent = 0.0
        for i in range(creates):
            ctx = context()
            change = ResourceChange("create", "Patient", f"c{rnd}-{i}", 1, 0, {"resourceType": "Patient"})
            with for_writing(engine).begin() as conn:
                conn.exec_driver_sql("SELECT 1")
                begin = time.thread_time()
                hook.on_changes(conn, [change], ctx)
                spent += time.thread_time() - begin
        results["create"].append(spent / creates * 1e6)
    hook.close()
    engine.dispose()
    return {key: statistics.median(values) for key, values in results.items()}


def table(rows: dict[str, dict[str, float]]) -> str:
    lines = [
        "| backend | threads | create off (ops/s) | create on | create cost | read off (ops/s) | read on | read cost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        backend, threads = name.split("/")
        c_cost = 1 - r["create-on"] / r["create-off"]
        r_cost = 1 - r["read-on"] / r["read-off"]
        lines.append(
            f"| {backend} | {threads} | {r['create-off']:.0f} | {r['create-on']:.0f} | {c_cost:.1%} "
            f"| {r['read-off']:.0f} | {r['read-on']:.0f} | {r_cost:.1%} |"
        )
    return "\n".join(lines)


def cpu_table(rows: dict[str, dict[str, float]]) -> str:
    """Process CPU per operation (µs, median of the rounds) and what audit adds to it."""
    lines = [
        "| backend | threads | create off (CPU µs/op) | create on | create +audit | read off (CPU µs/op) "
        "| read on | read +audit |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        backend, threads = name.split("/")
        c_off, c_on, r_off, r_on = (r[f"cpu-{k}"] for k in ("create-off", "create-on", "read-off", "read-on"))
        lines.append(
            f"| {backend} | {threads} | {c_off:.0f} | {c_on:.0f} | +{c_on - c_off:.0f} ({c_on / c_off - 1:.0%}) "
            f"| {r_off:.0f} | {r_on:.0f} | +{r_on - r_off:.0f} ({r_on / r_off - 1:.0%}) |"
        )
    return "\n".join(lines)


def machine() -> str:
    load = os.getloadavg()
    return (
        f"{platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--creates", type=int, default=400)
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=500, help="patients present before the reads")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument(
        "--per-event", action="store_true", help="the audit's own CPU per event instead (see per_event)"
    )
    args = parser.parse_args()
    print(f"machine (before): {machine()}", flush=True)
    if args.per_event:
        for backend in ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]:
            params = dict(rounds=args.rounds, reads=args.reads, creates=args.creates)
            if backend == "sqlite":
                found = per_event(f"sqlite:///{tempfile.mkdtemp(prefix='cb-bench-')}/bench.db", **params)
            else:
                from tests.support.postgres import PostgresCluster

                with PostgresCluster.start() as cluster:
                    found = per_event(cluster.create_database(f"bench_{uuid.uuid4().hex[:8]}"), **params)
            print(
                f"{backend}: request thread {found['request']:.1f} µs per buffered read, appender "
                f"{found['appender']:.1f} µs per read event, {found['create']:.0f} µs per audited create",
                flush=True,
            )
        return
    rows: dict[str, dict[str, float]] = {}
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    for backend in backends:
        for threads in args.threads:
            params = dict(
                rounds=args.rounds, creates=args.creates, reads=args.reads, seed=args.seed, threads=threads
            )
            if backend == "sqlite":
                url = f"sqlite:///{tempfile.mkdtemp(prefix='cb-bench-')}/bench.db"
                rows[f"sqlite/{threads}"] = run_backend(url, **params)
            else:
                from tests.support.postgres import PostgresCluster

                with PostgresCluster.start() as cluster:
                    url = cluster.create_database(f"bench_{uuid.uuid4().hex[:8]}")
                    rows[f"postgresql/{threads}"] = run_backend(url, **params)
            print(table({k: v for k, v in rows.items() if k == f"{backend}/{threads}"}), flush=True)
    print(f"machine (after): {machine()}")
    print()
    print(table(rows))
    print()
    print(cpu_table(rows))


if __name__ == "__main__":
    main()
