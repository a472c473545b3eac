"""Benchmark: HL7 v2 ADT^A04 over MLLP into PostgreSQL, end to end (issue #3).

End to end means what a HIS sees: frame → parse → map → journal commit →
store transaction (resources, history, search index, identifier claims, hooks,
journal status) → ACK on the wire.  PostgreSQL runs durable
(``fsync=on``, ``synchronous_commit=on``; see tests/support/postgres.py).

Usage::

    .venv/bin/python bench/mllp_ingest.py                      # throwaway cluster + `carebridge serve`
    .venv/bin/python bench/mllp_ingest.py -n 4000 --connections 1,8
    .venv/bin/python bench/mllp_ingest.py --target 127.0.0.1:2575   # an already running listener
    .venv/bin/python bench/mllp_ingest.py --database-url postgresql://...  # serve on that database

Each message is an ADT^A04 with Vietnamese content and a unique MRN and
MSH-10, so every one creates a Patient and an Encounter.  Reports msg/s over
the whole run, p50/p99 of the per-message ACK latency and the CPU milliseconds
per message of carebridge, PostgreSQL and the senders (``bench.cpu_accounting``)
with the ceiling they imply on this host's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu_accounting import postgres_cpu_s, process_tree_cpu_s  # noqa: E402
from gateway.mllp.client import MllpClient, parse_ack  # noqa: E402

FAMILIES = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng"]
MIDDLES = ["Văn", "Thị", "Hữu", "Ngọc", "Minh", "Đức", "Thu"]
GIVENS = ["An", "Bình", "Chi", "Dũng", "Hà", "Hạnh", "Khoa", "Lan", "Phúc", "Quỳnh", "Tuấn", "Yến"]


def a04(run: str, i: int) -> bytes:
    family, middle, given = FAMILIES[i % 10], MIDDLES[i % 7], GIVENS[i % 12]
    mrn = f"{run}{i:07d}"
    cccd = f"{zlib.crc32(run.encode()) % 10000:04d}{i:08d}"  # unique per run: CCCD is claimed once
    return (
        "MSH|^~\\&|HIS_VN|BVDK_HN|FHIRGATE|CRM_CSKH|20261120083000+0700||ADT^A04^ADT_A01|"
        f"{run}-{i}|P|2.5|||AL|NE|VNM|UNICODE UTF-8\r"
        "EVN|A04|20261120083000+0700\r"
        f"PID|1||{mrn}^^^BVDK_HN^MR~{cccd}^^^BCA^NI||{family}^{given}^{middle}^^^^L||19850312|M|||"
        f"{i % 300} Trần Hưng Đạo^^Phường Cửa Nam^Hà Nội^100000^VNM^H||09{i % 100000000:08d}^PRN^CP|||M\r"
        f"PV1|1|O|KHAM^P101^01^BVDK_HN||||BS001^Trần^Bình^Thị^^BS|||NHA|||||||||V{mrn}|||||||||||||||||||||||||"
        "20261120083000+0700\r"
    ).encode()


def a08(run: str, i: int) -> bytes:
    """An ADT^A08 for the patient of ``a04(run, i)``, an hour later (a new address): an update."""
    update = a04(run, i).decode()
    update = update.replace(f"ADT^A04^ADT_A01|{run}-{i}|", f"ADT^A08^ADT_A01|{run}-{i}U|")
    update = update.replace("EVN|A04|20261120083000+0700", "EVN|A08|20261120093000+0700")
    return update.replace(" Trần Hưng Đạo^", " Lê Duẩn^").encode()


def workload(run: str, messages: int, connections: int, updates: bool) -> list[bytes]:
    """``messages`` ADT^A04; with ``updates``, half A04 and half A08 of the same patients.

    Blocks of ``connections`` registrations are followed by their updates, so the
    round-robin split of :func:`run_load` sends each update on its registration's
    connection, after it.
    """
    if not updates:
        return [a04(run, i) for i in range(messages)]
    out: list[bytes] = []
    for start in range(0, messages // 2, connections):
        block = range(start, min(start + connections, messages // 2))
        out += [a04(run, i) for i in block] + [a08(run, i) for i in block]
    return out


def run_load(
    host: str,
    port: int,
    messages: list[bytes],
    connections: int,
    *,
    server_pid: int | None = None,
    pg_data_dir: Path | None = None,
) -> dict[str, float]:
    chunks = [messages[c::connections] for c in range(connections)]
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors: list[str] = []
    barrier = threading.Barrier(connections + 1)

    def worker(c: int) -> None:
        with MllpClient(host, port, timeout=60) as client:
            barrier.wait()
            for message in chunks[c]:
                t0 = time.perf_counter()
                answer = client.request(message)
                latencies[c].append(time.perf_counter() - t0)
                code = parse_ack(answer).code if answer else "none"
                if code not in ("AA", "CA"):
                    errors.append(code)

    threads = [threading.Thread(target=worker, args=(c,)) for c in range(connections)]
    for t in threads:
        t.start()
    cpu = _CpuMeter(server_pid, pg_data_dir)
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    flat = sorted(x for lat in latencies for x in lat)
    return {
        "connections": connections,
        "messages": len(messages),
        "seconds": round(elapsed, 3),
        "msg_per_s": round(len(messages) / elapsed, 1),
        "p50_ms": round(statistics.median(flat) * 1000, 2),
        "p99_ms": round(flat[min(len(flat) - 1, int(len(flat) * 0.99))] * 1000, 2),
        "errors": len(errors),
        **cpu.per_message(len(messages)),
    }


class _CpuMeter:
    """CPU ms per message of carebridge, PostgreSQL and the senders (this process) over one run.

    Their sum against the host's cores is the ceiling the run implies
    (``cpu_ceiling_msg_s``): a throughput target above it needs less CPU per
    message, not more concurrency.
    """

    def __init__(self, server_pid: int | None, pg_data_dir: Path | None) -> None:
        self.server_pid, self.pg_data_dir = server_pid, pg_data_dir
        self.start = self._sample()

    def _sample(self) -> dict[str, float]:
        sample = {"senders": time.process_time()}
        if self.server_pid is not None:
            sample["server"] = process_tree_cpu_s(self.server_pid)
        if self.pg_data_dir is not None:
            sample["postgres"] = postgres_cpu_s(self.pg_data_dir)
        return sample

    def per_message(self, messages: int) -> dict[str, float]:
        end = self._sample()
        spent = {name: (end[name] - self.start[name]) * 1000 / messages for name in end}
        report = {f"{name}_cpu_ms_per_msg": round(ms, 2) for name, ms in spent.items()}
        if len(spent) == 3:
            total = sum(spent.values())
            report["cpu_ceiling_msg_s"] = round((os.cpu_count() or 1) * 1000 / total, 1)
        return report


def start_serve(
    database_url: str, workdir: Path, extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int, Path]:
    """``carebridge serve`` in its own process (own interpreter, as in production); its MLLP port."""
    log = workdir / "serve.log"
    # the load generator's senders are not registered: open mode (the registry lookup is a dict hit)
    env = {**os.environ, "CAREBRIDGE_LOG_LEVEL": "INFO", "CAREBRIDGE_MLLP_OPEN": "true", **(extra_env or {})}
    carebridge = str(Path(sys.executable).with_name("carebridge"))
    proc = subprocess.Popen(
        [carebridge, "serve", "--http-port", "0", "--mllp-port", "0", "--database-url", database_url],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env=env,
        cwd=str(workdir),
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        match = re.search(rb'"mllp_port":\s*(\d+)', log.read_bytes())
        if match:
            return proc, int(match.group(1)), log
        if proc.poll() is not None:
            raise SystemExit(f"carebridge serve exited:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("carebridge serve did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", "--messages", type=int, default=3000, help="messages per run")
    parser.add_argument("--connections", default="1,8", help="comma-separated concurrency levels")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--updates", action="store_true", help="half the messages are A08 updates of the registered patients"
    )
    parser.add_argument("--target", help="host:port of a running listener (no server is started)")
    parser.add_argument("--database-url", help="PostgreSQL URL for the started server (default: throwaway)")
    parser.add_argument("--json", action="store_true", help="print results as JSON lines")
    parser.add_argument("--server-pid", type=int, help="with --target: carebridge's pid, for its CPU")
    parser.add_argument("--pg-data-dir", type=Path, help="with --target: PostgreSQL's data dir, for its CPU")
    args = parser.parse_args(argv)

    cluster = proc = None
    workdir = Path(tempfile.mkdtemp(prefix="bench-mllp-"))
    try:
        if args.target:
            host, _, port_text = args.target.rpartition(":")
            port = int(port_text)
            server_pid, pg_data_dir = args.server_pid, args.pg_data_dir
        else:
            database_url = args.database_url
            if not database_url:
                from tests.support.postgres import PostgresCluster

                cluster = PostgresCluster.start()
                database_url = cluster.create_database("bench")
            proc, port, _log = start_serve(database_url, workdir)
            host = "127.0.0.1"
            server_pid, pg_data_dir = proc.pid, None if cluster is None else cluster.data_dir
        run = uuid.uuid4().hex[:6].upper()
        if args.warmup > 0:
            run_load(host, port, [a04(run + "W", i) for i in range(args.warmup)], 4)
        results = []
        for level in (int(x) for x in args.connections.split(",")):
            batch = workload(f"{run}C{level}", args.messages, level, args.updates)
            result = run_load(host, port, batch, level, server_pid=server_pid, pg_data_dir=pg_data_dir)
            results.append(result)
            if args.json:
                print(json.dumps(result), flush=True)
            else:
                print(
                    f"{result['connections']:>2} conn  {result['messages']:>6} msg  "
                    f"{result['msg_per_s']:>8.1f} msg/s  p50 {result['p50_ms']:>6.2f} ms  "
                    f"p99 {result['p99_ms']:>7.2f} ms  errors {result['errors']}  "
                    + "  ".join(f"{k.removesuffix('_per_msg')} {v}" for k, v in result.items() if "cpu" in k),
                    flush=True,
                )
        return 0 if all(r["errors"] == 0 for r in results) else 1
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
