"""FHIR REST throughput and latency over real HTTP, on SQLite and/or a throwaway PostgreSQL.

    .venv/bin/python -m bench.fhir_load --backend postgresql --patients 100000 --clients 8

Seeds N synthetic Vietnamese patients (every 10th with an Encounter and an
Appointment) directly through the store, starts ``carebridge serve`` as a
subprocess, gets an access token when auth is on, then measures create, read
by id, identifier search and ``$everything`` with C concurrent keep-alive
connections.  Results go to stdout as a Markdown table (paste into
docs/benchmarks.md) and to bench/results/*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.loadgen import LoadResult, run_load, summarize
from fhir_store import Create, FhirStore, RequestContext, make_engine, open_cipher, upgrade

MRN = "https://id.carebridge.vn/mrn/BENCH"
FAMILIES = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ"]
MIDDLES = ["Văn", "Thị", "Minh", "Ngọc", "Quốc", "Thu"]
GIVENS = ["An", "Bình", "Châu", "Dũng", "Hà", "Hùng", "Lan", "Mai", "Nam", "Trang"]
ROOT = Path(__file__).resolve().parent.parent
# the seeding process and the `carebridge serve` subprocess must use the same store keys
STORE_KEY_FILE = os.environ.get("CAREBRIDGE_STORE_KEY_FILE") or str(ROOT / "var" / "store-keys.json")


def synthetic_patient(i: int, prefix: str = "P") -> dict[str, Any]:
    rnd = random.Random(i)
    family, middle, given = rnd.choice(FAMILIES), rnd.choice(MIDDLES), rnd.choice(GIVENS)
    return {
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": f"{prefix}{i:08d}"}],
        "name": [{"family": family, "given": [middle, given], "text": f"{family} {middle} {given}"}],
        "gender": rnd.choice(["male", "female"]),
        "birthDate": f"{rnd.randint(1940, 2020)}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}",
        "telecom": [
            {"system": "phone", "value": f"+849{rnd.randint(10_000_000, 99_999_999)}", "use": "mobile"}
        ],
        "address": [
            {"line": [f"{rnd.randint(1, 200)} Lê Lợi"], "city": "Phường Sài Gòn", "state": "Hồ Chí Minh"}
        ],
    }


def seed(database_url: str, count: int) -> list[str]:
    """Create ``count`` patients; return the ids of those that also have an encounter."""
    engine = make_engine(database_url, pool_size=2)
    store = FhirStore(engine, cipher=open_cipher(engine, STORE_KEY_FILE))
    ctx = RequestContext("bench-seed")
    with_visits: list[str] = []
    batch = 500
    for start in range(0, count, batch):
        ops: list[Any] = []
        for i in range(start, min(count, start + batch)):
            ops.append(Create(synthetic_patient(i), full_url=f"urn:uuid:p{i}"))
            if i % 10 == 0:
                ops.append(
                    Create(
                        {
                            "resourceType": "Encounter",
                            "status": "finished",
                            "class": {
                                "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                "code": "AMB",
                            },
                            "subject": {"reference": f"urn:uuid:p{i}"},
                            "period": {
                                "start": "2026-11-20T08:30:00+07:00",
                                "end": "2026-11-20T09:00:00+07:00",
                            },
                        }
                    )
                )
                ops.append(
                    Create(
                        {
                            "resourceType": "Appointment",
                            "status": "booked",
                            "start": "2026-11-25T09:00:00+07:00",
                            "end": "2026-11-25T09:30:00+07:00",
                            "participant": [{"actor": {"reference": f"urn:uuid:p{i}"}, "status": "accepted"}],
                        }
                    )
                )
        results = store.transact(ops, ctx, validate=False)
        with_visits += [
            r.stored.id
            for r, op in zip(results, ops, strict=True)
            if r.stored
            and op.resource["resourceType"] == "Patient"
            and op.full_url
            and int(op.full_url[10:]) % 10 == 0
        ]
    store.engine.dispose()
    return with_visits


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(database_url: str, port: int, workers: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CAREBRIDGE_LOG_LEVEL": "WARNING",
        "CAREBRIDGE_HTTP_WORKERS": str(workers),
        "CAREBRIDGE_STORE_KEY_FILE": STORE_KEY_FILE,
    }
    proc = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/carebridge"),
            "serve",
            "--database-url",
            database_url,
            "--http-port",
            str(port),
            "--mllp-port",
            str(free_port()),
        ],
        env=env,
        cwd=ROOT,
    )
    return _healthy(proc, port)


def start_bench_server(database_url: str, port: int, audit: str) -> subprocess.Popen[bytes]:
    """One HTTP process with the audit trail ``on`` or ``off`` (``bench.serve_for_bench``)."""
    env = {**os.environ, "CAREBRIDGE_LOG_LEVEL": "WARNING", "CAREBRIDGE_STORE_KEY_FILE": STORE_KEY_FILE}
    command = [sys.executable, "-m", "bench.serve_for_bench", "--database-url", database_url]
    proc = subprocess.Popen([*command, "--port", str(port), "--audit", audit], env=env, cwd=ROOT)
    return _healthy(proc, port)


def _healthy(proc: subprocess.Popen[bytes], port: int) -> subprocess.Popen[bytes]:
    """``proc`` once its ``/healthz`` answers (30 s at most)."""
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


@contextlib.contextmanager
def bench_database(backend: str) -> Iterator[str]:
    """A migrated, empty database: a SQLite file in a temp dir, or a throwaway PostgreSQL cluster."""
    cluster = None
    if backend == "postgresql":
        sys.path.insert(0, str(ROOT))
        from tests.support.postgres import PostgresCluster

        cluster = PostgresCluster.start()
        url = cluster.create_database("bench")
    else:
        url = f"sqlite:///{tempfile.mkdtemp(prefix='carebridge-bench-')}/bench.db"
    try:
        upgrade(url)
        yield url
    finally:
        if cluster is not None:
            cluster.stop()


def audit_cost(backend: str, patients: int, clients: int, seconds: float, rounds: int) -> str:
    """Issue #4: the same REST workload against one server process with the audit on and off.

    Seeds once, then alternates on/off (off/on in odd rounds) so drift hits both
    sides; reports each scenario's median req/s per side and the cost, 1 - on/off.
    """
    rates: dict[tuple[str, str], list[float]] = {}
    with bench_database(backend) as url:
        ids = seed(url, patients)
        for round_no in range(rounds):
            for audit in ("on", "off") if round_no % 2 == 0 else ("off", "on"):
                port = free_port()
                server = start_bench_server(url, port, audit)
                try:
                    auth = bearer_token(url, port)
                    for result in asyncio.run(measure(port, ids, patients, clients, seconds, auth)):
                        rates.setdefault((result.name, audit), []).append(result.rps)
                finally:
                    server.terminate()
                    server.wait(timeout=30)
    lines = [
        "| scenario | audit off (req/s) | audit on (req/s) | cost (1 - on/off) | runs off / on |",
        "|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(name for name, _ in rates):
        off, on = statistics.median(rates[(name, "off")]), statistics.median(rates[(name, "on")])
        runs = f"{', '.join(f'{r:.0f}' for r in rates[(name, 'off')])} / {', '.join(f'{r:.0f}' for r in rates[(name, 'on')])}"
        lines.append(f"| {name} | {off:.0f} | {on:.0f} | {100 * (1 - on / off):.1f}% | {runs} |")
    return "\n".join(lines)


def bearer_token(database_url: str, port: int) -> dict[str, str]:
    """Register a bench client and get a token; no header when the server has no auth endpoint."""
    try:
        from gateway.auth.clients import ClientRegistry
    except ImportError:
        return {}
    engine = make_engine(database_url, pool_size=1)
    client_id = f"bench-{random.randint(0, 10**9)}"
    secret = ClientRegistry(engine).add(client_id, "his_integration")
    engine.dispose()
    data = f"grant_type=client_credentials&client_id={client_id}&client_secret={secret}".encode()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/auth/token", data=data, timeout=5) as response:
            token = json.loads(response.read())["access_token"]
    except OSError:
        return {}
    return {"Authorization": f"Bearer {token}"}


async def measure(
    port: int, patient_ids: list[str], total_patients: int, clients: int, seconds: float, auth: dict[str, str]
) -> list[LoadResult]:
    rnd = random.Random(7)
    fhir = {"Accept": "application/fhir+json", **auth}
    fresh = itertools.count(10**7 + rnd.randint(0, 10**6) * 100)  # unique across warm-up and runs

    def create(_: int) -> tuple[str, str, bytes, dict[str, str]]:
        body = json.dumps(synthetic_patient(next(fresh), prefix="C")).encode()
        return "POST", "/fhir/Patient", body, {**fhir, "Content-Type": "application/fhir+json"}

    def read(_: int) -> tuple[str, str, bytes, dict[str, str]]:
        return "GET", f"/fhir/Patient/{rnd.choice(patient_ids)}", b"", fhir

    def search(_: int) -> tuple[str, str, bytes, dict[str, str]]:
        value = f"P{rnd.randrange(total_patients):08d}"
        return "GET", f"/fhir/Patient?identifier={MRN}%7C{value}", b"", fhir

    def everything(_: int) -> tuple[str, str, bytes, dict[str, str]]:
        return "GET", f"/fhir/Patient/{rnd.choice(patient_ids)}/$everything", b"", fhir

    results = []
    for name, factory in (
        ("create", create),
        ("read", read),
        ("identifier search", search),
        ("$everything", everything),
    ):
        await run_load(name, "127.0.0.1", port, factory, clients=clients, total=200, max_seconds=5)  # warm-up
        results.append(
            await run_load(
                name, "127.0.0.1", port, factory, clients=clients, total=10**9, max_seconds=seconds
            )
        )
    return results


def run_backend(backend: str, patients: int, clients: int, seconds: float, workers: int) -> list[LoadResult]:
    with bench_database(backend) as url:
        started = time.perf_counter()
        ids = seed(url, patients)
        print(
            f"[{backend}] seeded {patients} patients in {time.perf_counter() - started:.1f}s", file=sys.stderr
        )
        port = free_port()
        server = start_server(url, port, workers)
        try:
            auth = bearer_token(url, port)
            return asyncio.run(measure(port, ids, patients, clients, seconds, auth))
        finally:
            server.terminate()
            server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--http-workers", type=int, default=2, help="CAREBRIDGE_HTTP_WORKERS of the server")
    parser.add_argument(
        "--audit-cost",
        type=int,
        metavar="ROUNDS",
        default=0,
        help="instead: ROUNDS alternating runs of one server process with the audit on and off (issue #4)",
    )
    args = parser.parse_args()
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    if args.audit_cost:
        for backend in backends:
            table = audit_cost(backend, args.patients, args.clients, args.seconds, args.audit_cost)
            print(
                f"\n### {backend}: audit on vs off, {args.patients} patients, {args.clients} clients, "
                f"1 HTTP process, {args.audit_cost} rounds, {os.cpu_count()} cores\n\n{table}"
            )
        return
    out_dir = ROOT / "bench" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    for backend in backends:
        results = run_backend(backend, args.patients, args.clients, args.seconds, args.http_workers)
        print(
            f"\n### {backend}: {args.patients} patients, {args.clients} clients, "
            f"{args.http_workers} HTTP workers, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}\n"
        )
        print(summarize(results))
        (out_dir / f"fhir_load_{backend}.json").write_text(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "rps": r.rps,
                        "p50": r.percentile(0.5),
                        "p99": r.percentile(0.99),
                        "errors": r.errors,
                        "requests": r.requests,
                    }
                    for r in results
                ],
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
