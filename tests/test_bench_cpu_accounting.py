"""The CPU accounting the benchmarks publish (bench/cpu_accounting.py) counts what it says it counts."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import psycopg
import pytest

from bench.cpu_accounting import postgres_cpu_s, process_cpu_s, process_tree_cpu_s
from tests.support.postgres import PostgresCluster

pytestmark = pytest.mark.slow  # burns CPU on purpose to measure it

BURN = "import time\nend = time.process_time() + {s}\nwhile time.process_time() < end: pass\n"


def test_a_process_tree_includes_live_and_reaped_children() -> None:
    me = os.getpid()
    before_tree = process_tree_cpu_s(me)
    subprocess.run([sys.executable, "-c", BURN.format(s=0.4)], check=True)  # reaped: parent's cutime
    live = subprocess.Popen([sys.executable, "-c", BURN.format(s=30)])
    try:
        deadline = time.monotonic() + 20  # a loaded machine gives the child less than a core
        while process_cpu_s(live.pid) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
        live_cpu = process_cpu_s(live.pid)
        grown = process_tree_cpu_s(me) - before_tree
    finally:
        live.kill()
        live.wait()
    assert live_cpu >= 0.3
    assert grown >= 0.4 + live_cpu - 0.02  # both children (clock ticks are 10 ms)


def test_postgres_cpu_counts_live_backends_and_keeps_what_exited(fast_pg_cluster: PostgresCluster) -> None:
    before = postgres_cpu_s(fast_pg_cluster.data_dir)
    with psycopg.connect(fast_pg_cluster.dsn()) as conn:
        conn.execute("SELECT count(*) FROM generate_series(1, 3000000)").fetchone()
        while_connected = postgres_cpu_s(fast_pg_cluster.data_dir) - before
    assert while_connected >= 0.1  # the backend's own time, counted while it lives
    deadline = time.monotonic() + 5
    after = postgres_cpu_s(fast_pg_cluster.data_dir) - before
    while after < while_connected and time.monotonic() < deadline:  # until the postmaster reaps it
        time.sleep(0.05)
        after = postgres_cpu_s(fast_pg_cluster.data_dir) - before
    assert after >= while_connected  # then in the postmaster's children total: never goes back
