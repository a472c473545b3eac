"""Benchmark: does a flood of bad logins at ``POST /auth/token`` stall the server? (issue #16 item 5)

The attack: 8 parallel loops posting wrong client secrets.  While scrypt ran on the
event loop, ``/healthz`` went from 2 ms to 400 ms median.  Goal: ``/healthz`` p50 under
the flood within 3x its idle p50.

One server process (``bench.serve_for_bench``, audit on), a SQLite file or a throwaway
PostgreSQL cluster, one registered client at the deployment's scrypt cost (log2 N = 14).
``/healthz`` is probed sequentially over one keep-alive connection, first idle, then while
8 threads each loop bad logins (a keep-alive connection each).  Two flood scenarios:

* ``unthrottled``: throttle limits set out of reach, so every bad login costs a full scrypt
  (shows the hashing is off the event loop and bounded);
* ``defaults``: the shipped throttle settings, so the flood is soon answered 429 without
  hashing (what a deployment sees).

Usage::

    .venv/bin/python bench/token_stall.py                 # SQLite
    .venv/bin/python bench/token_stall.py --postgres
    .venv/bin/python bench/token_stall.py --probes 400 --loops 8
    git archive 48f39dd | tar -x -C /tmp/before && .venv/bin/python bench/token_stall.py --before /tmp/before
"""

from __future__ import annotations

import argparse
import collections
import http.client
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.fhir_load import STORE_KEY_FILE, _healthy, bench_database, free_port  # noqa: E402
from fhir_store import make_engine  # noqa: E402
from gateway.auth.clients import ClientRegistry  # noqa: E402

CLIENT = "bench-his"
UNREACHABLE = {
    "CAREBRIDGE_AUTH_THROTTLE_CLIENT_FAILURES": "1000000000",
    "CAREBRIDGE_AUTH_THROTTLE_ADDRESS_FAILURES": "1000000000",
}


def start(url: str, port: int, extra: dict[str, str], tree: Path = ROOT) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "CAREBRIDGE_LOG_LEVEL": "WARNING",
        "CAREBRIDGE_STORE_KEY_FILE": STORE_KEY_FILE,
        **extra,
        "PYTHONPATH": str(tree),
    }
    command = [sys.executable, "-m", "bench.serve_for_bench", "--database-url", url, "--port", str(port)]
    return _healthy(subprocess.Popen(command, env=env, cwd=tree), port)


def probe(port: int, count: int) -> list[float]:
    """Latencies (ms) of ``count`` sequential ``GET /healthz`` on one connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    try:
        for _ in range(count):
            begin = time.perf_counter()
            conn.request("GET", "/healthz")
            conn.getresponse().read()
            out.append((time.perf_counter() - begin) * 1000)
            time.sleep(0.005)
    finally:
        conn.close()
    return out


def flood(
    port: int, loops: int, stop: threading.Event, codes: collections.Counter[int]
) -> list[threading.Thread]:
    body = f"grant_type=client_credentials&client_id={CLIENT}&client_secret=wrong"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    lock = threading.Lock()

    def loop() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while not stop.is_set():
            conn.request("POST", "/auth/token", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            with lock:
                codes[response.status] += 1
        conn.close()

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(loops)]
    for thread in threads:
        thread.start()
    return threads


def percentiles(samples: list[float]) -> tuple[float, float]:
    cuts = statistics.quantiles(samples, n=20)
    return statistics.median(samples), cuts[18]


def scenario(url: str, name: str, extra: dict[str, str], probes: int, loops: int, tree: Path = ROOT) -> str:
    port = free_port()
    server = start(url, port, extra, tree)
    try:
        probe(port, 50)  # warm-up
        idle = percentiles(probe(port, probes))
        stop, codes = threading.Event(), collections.Counter[int]()
        begin = time.perf_counter()
        threads = flood(port, loops, stop, codes)
        time.sleep(1.0)  # let the flood reach its steady state
        loaded = percentiles(probe(port, probes))
        stop.set()
        elapsed = time.perf_counter() - begin
        for thread in threads:
            thread.join(timeout=60)
    finally:
        server.terminate()
        server.wait(timeout=30)
    ratio = loaded[0] / idle[0]
    logins = sum(codes.values())
    statuses = ", ".join(f"{code}: {n}" for code, n in sorted(codes.items()))
    return (
        f"| {name} | {idle[0]:.2f} / {idle[1]:.2f} | {loaded[0]:.2f} / {loaded[1]:.2f} | {ratio:.2f}x "
        f"| {logins / elapsed:.0f}/s ({statuses}) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--probes", type=int, default=400)
    parser.add_argument("--loops", type=int, default=8)
    parser.add_argument(
        "--before", type=Path, help="also serve from this source tree (e.g. `git archive` of the old commit)"
    )
    args = parser.parse_args()
    with bench_database("postgresql" if args.postgres else "sqlite") as url:
        engine = make_engine(url)
        ClientRegistry(engine, secret_log2n=14).add(CLIENT, "his_integration")
        engine.dispose()
        print(
            f"backend: {'PostgreSQL' if args.postgres else 'SQLite'}; {args.loops} bad-login loops; cpus: {os.cpu_count()}"
        )
        print(
            "| scenario | /healthz idle p50 / p95 (ms) | under flood p50 / p95 (ms) | p50 ratio | bad logins answered |"
        )
        print("|---|---|---|---|---|")
        if args.before:
            print(
                scenario(url, f"before ({args.before.name})", {}, args.probes, args.loops, args.before),
                flush=True,
            )
        print(scenario(url, "unthrottled", UNREACHABLE, args.probes, args.loops), flush=True)
        print(scenario(url, "defaults", {}, args.probes, args.loops), flush=True)


if __name__ == "__main__":
    main()
