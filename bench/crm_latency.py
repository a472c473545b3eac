"""Benchmark: HL7 ADT^A03 received over MLLP → ``encounter.completed`` webhook delivered (issue #5).

End to end: MLLP frame → parse/map → journal → store transaction (resources,
audit, consent decisions + audit, sealed outbox row) → ACK; the dispatcher
thread picks the event up, signs it and POSTs it to a real HTTP receiver on
loopback.  Latency per message = webhook arrival − A03 send time.

carebridge runs as ``carebridge serve`` in its own process, as in production;
the HIS senders and the CRM's receiver share this benchmark process (in
production they are other machines).

Setup (not timed, in this process, before the server starts): N patients
registered with ADT^A04 and a post-visit-care Consent each, and the
subscription, starting at the head of the feed.  Load: the A03s are offered at ``--rate`` msg/s (paced, spread
over ``--connections`` MLLP connections, each waiting for its ACK).

Usage::

    .venv/bin/python bench/crm_latency.py                     # SQLite file in a temp dir
    .venv/bin/python bench/crm_latency.py --postgres          # throwaway PostgreSQL cluster
    .venv/bin/python bench/crm_latency.py -n 2000 --rate 200 --connections 8
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.cpu_accounting import process_cpu_s  # noqa: E402
from bench.mllp_ingest import start_serve  # noqa: E402
from consent import POST_VISIT_CARE, build_consent  # noqa: E402
from fhir_store import Create, RequestContext, format_instant, now_us, upgrade  # noqa: E402
from gateway.mllp.client import MllpClient, parse_ack  # noqa: E402
from gateway.runtime import Runtime  # noqa: E402
from gateway.settings import Settings  # noqa: E402

CRM = "crm-bench"
MSH = "MSH|^~\\&|HIS_VN|BVDK_HN|FHIRGATE|CRM_CSKH|20261120083000+0700||{type}|{ctl}|P|2.5|||AL|NE|VNM|UNICODE UTF-8\r"


def a04(mrn: str) -> bytes:
    return (
        MSH.format(type="ADT^A04^ADT_A01", ctl=f"R{mrn}")
        + "EVN|A04|20261120083000+0700\r"
        + f"PID|1||{mrn}^^^BVDK_HN^MR||Nguyễn^An^Văn^^^^L||19850312|M|||1 Lý Thường Kiệt^^Hoàn Kiếm^Hà Nội||0912345678^PRN^CP\r"
        + f"PV1|1|O|KHAM^P101^01^BVDK_HN||||BS001^Trần^Bình|||NHA|||||||||V{mrn}|||||||||||||||||||||||||20261120083000+0700\r"
    ).encode()


def a03(mrn: str) -> bytes:
    return (
        MSH.format(type="ADT^A03^ADT_A03", ctl=f"D{mrn}")
        + "EVN|A03|20261120101500+0700\r"
        + f"PID|1||{mrn}^^^BVDK_HN^MR||Nguyễn^An^Văn^^^^L||19850312|M\r"
        + f"PV1|1|O|KHAM^P101^01^BVDK_HN||||BS001^Trần^Bình|||NHA|||||||||V{mrn}|||||||||||||||||01||||||||"
        + "20261120083000+0700|20261120101500+0700\r"
        + "DG1|1||K02.1^Sâu răng^ICD10||20261120|F\r"
    ).encode()


class Receiver:
    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.bodies: list[bytes] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                event = json.loads(body)
                if event["type"] == "encounter.completed":
                    outer.arrivals.setdefault(event["subject"], time.perf_counter())
                outer.bodies.append(body)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"


def setup(database_url: str, workdir: Path, mrns: list[str], receiver_url: str) -> dict[str, str]:
    """Register the patients, their consents and the subscription; return pseudonym -> MRN.

    Runs in this process on its own :class:`Runtime`, closed before the server starts.
    """
    from gateway.ingest import Ingestor

    upgrade(database_url)
    settings = Settings.from_env(server_env(database_url, workdir))  # the server's own settings
    runtime = Runtime.create(settings, migrate=False)
    try:
        bridge = runtime.crm
        ingestor = Ingestor(runtime.store, settings)
        for mrn in mrns:
            assert ingestor.handle(a04(mrn)).ack_code == "AA"
        from crm_bridge import outbox_head
        from fhir_store import claimed_ids

        with runtime.engine.connect() as conn:
            blinded = {runtime.store.cipher.blind(m): m for m in mrns}  # claims hold keyed hashes
            claimed = claimed_ids(conn, "Patient", blinded)
        ids = {blinded[value]: res_id for value, res_id in claimed.items()}
        ctx = RequestContext("bench-setup")
        pseudonyms: dict[str, str] = {}
        for mrn in mrns:
            pid = ids[mrn]
            consent = build_consent(
                pid,
                POST_VISIT_CARE,
                permit=True,
                date_time=format_instant(now_us()),  # grants older than 24 h are refused
                channel="counter",
                text_version="v1",
                text_shown="Đồng ý",
                recipient=CRM,
            )
            runtime.store.transact([Create(consent)], ctx)
            pseudonyms[bridge.keys.pseudonym(CRM, pid)] = mrn
        with runtime.engine.connect() as conn:
            head = outbox_head(conn)
        bridge.subscriptions.create(CRM, receiver_url, ["encounter.completed"], from_seq=head)
        return pseudonyms
    finally:
        runtime.close()


def server_env(database_url: str, workdir: Path) -> dict[str, str]:
    """The settings both the setup runtime and ``carebridge serve`` read (same keys, same files)."""
    projection = workdir / "projection.json"
    if not projection.exists():
        projection.write_text(
            json.dumps({"clients": {CRM: {"fields": {"encounter": ["completed_at", "service_type"]}}}})
        )
    return {
        "CAREBRIDGE_DATABASE_URL": database_url,
        "CAREBRIDGE_DB_POOL_SIZE": "16",
        "CAREBRIDGE_AUDIT_KEY_FILE": str(workdir / "audit.pem"),
        "CAREBRIDGE_STORE_KEY_FILE": str(workdir / "store-keys.json"),
        "CAREBRIDGE_CRM_PROJECTION_FILE": str(projection),
        "CAREBRIDGE_CRM_KEY_FILE": str(workdir / "crm-keys.json"),
        "CAREBRIDGE_CRM_POLL_INTERVAL_S": "0.02",
        "CAREBRIDGE_MLLP_OPEN": "true",  # the bench's HIS sender is not registered
    }


def run(database_url: str, workdir: Path, n: int, rate: float, connections: int) -> dict[str, Any]:
    receiver = Receiver()
    run_id = uuid.uuid4().hex[:6].upper()
    mrns = [f"{run_id}{i:06d}" for i in range(n)]
    pseudonyms = setup(database_url, workdir, mrns, receiver.url)
    proc, port, server_log = start_serve(database_url, workdir, server_env(database_url, workdir))
    try:
        sent: dict[str, float] = {}
        acks: list[float] = []
        lock = threading.Lock()
        interval = connections / rate
        t0 = time.perf_counter() + 0.2

        def worker(c: int) -> None:
            with MllpClient("127.0.0.1", port, timeout=60) as conn:
                for k, mrn in enumerate(mrns[c::connections]):
                    due = t0 + (c / rate) + k * interval
                    delay = due - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                    start = time.perf_counter()
                    with lock:
                        sent[mrn] = start
                    answer = conn.request(a03(mrn))
                    acks.append(time.perf_counter() - start)
                    assert parse_ack(answer or b"").code in ("AA", "CA")

        threads = [threading.Thread(target=worker, args=(c,)) for c in range(connections)]
        cpu_before = process_cpu_s(proc.pid)
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        load_end = time.perf_counter()
        deadline = time.monotonic() + 120
        while len(receiver.arrivals) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        server_cpu_s = process_cpu_s(proc.pid) - cpu_before
    finally:
        if len(receiver.arrivals) < n:
            print(server_log.read_text(errors="replace")[-3000:], file=sys.stderr)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    latencies = sorted(
        receiver.arrivals[p] - sent[m] for p, m in pseudonyms.items() if p in receiver.arrivals
    )
    leaks = [b for b in receiver.bodies if any(s in b.decode() for s in ("K02", "Sâu", "Lý Thường", run_id))]

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000

    return {
        "messages": n,
        "offered_rate": rate,
        "achieved_send_rate": round(n / (load_end - t0), 1),
        "delivered": len(latencies),
        "p50_ms": round(pct(0.50), 1),
        "p90_ms": round(pct(0.90), 1),
        "p99_ms": round(pct(0.99), 1),
        "max_ms": round(latencies[-1] * 1000, 1),
        "ack_p50_ms": round(statistics.median(acks) * 1000, 1),
        "server_cpu_ms_per_msg": round(server_cpu_s * 1000 / n, 2),
        "payloads_with_forbidden_content": len(leaks),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--postgres", action="store_true", help="throwaway PostgreSQL cluster (durable settings)"
    )
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        cluster = None
        url = args.database_url or f"sqlite:///{workdir / 'bench.db'}"
        if args.postgres:
            from tests.support.postgres import PostgresCluster

            cluster = PostgresCluster.start()
            url = cluster.create_database("crm_bench")
        try:
            result = run(url, workdir, args.n, args.rate, args.connections)
        finally:
            if cluster is not None:
                cluster.stop()
    result["backend"] = (
        "postgresql" if args.postgres or (args.database_url or "").startswith("postgres") else "sqlite"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
