"""Throughput of HL7 v2 parsing, mapping and ACK building on the A04 sample.

    .venv/bin/python bench/hl7_parse.py [--seconds 3]

Prints messages per second for the fast tokenizer (mappers.hl7_message),
parse+map (mappers.router), the fast ACK builder, and for comparison hl7apy
and python-hl7.  Single process, single thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import hl7  # noqa: E402
from hl7apy.parser import parse_message as hl7apy_parse  # noqa: E402

from common import InvalidInput  # noqa: E402
from mappers import build_ack, build_ack_hl7apy, map_message, parse_message  # noqa: E402

SAMPLE = ROOT / "tests" / "fixtures" / "hl7v2" / "adt_a04_register_outpatient.hl7"


def measure(fn: Callable[[], object], seconds: float) -> float:
    """Calls per second of ``fn`` over about ``seconds`` (after a short warm-up)."""
    for _ in range(20):
        fn()
    count = 0
    batch = 1
    start = time.perf_counter()
    while True:
        for _ in range(batch):
            fn()
        count += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return count / elapsed
        batch = min(batch * 2, 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    raw = SAMPLE.read_bytes()
    text = raw.decode("utf-8")
    msg = parse_message(raw)
    header = msg.header
    error = InvalidInput("impossible date: '19851345'", location="PID-7")
    cases: list[tuple[str, Callable[[], object]]] = [
        ("fast tokenizer parse", lambda: parse_message(raw)),
        ("parse + map (bundle)", lambda: map_message(parse_message(raw))),
        ("fast ACK build (AE+ERR)", lambda: build_ack(header, ack_code="AE", error=error, control_id="A1")),
        ("hl7apy parse", lambda: hl7apy_parse(text, find_groups=True)),
        ("python-hl7 parse", lambda: hl7.parse(text)),
        (
            "hl7apy ACK build (AE+ERR)",
            lambda: build_ack_hl7apy(header, ack_code="AE", error=error, control_id="A1"),
        ),
    ]
    print(f"sample: {SAMPLE.name} ({len(raw)} bytes), {args.seconds:g} s per case")
    print(f"{'case':<28} {'msg/s':>12}")
    print("-" * 41)
    for name, fn in cases:
        print(f"{name:<28} {measure(fn, args.seconds):>12,.0f}", flush=True)


if __name__ == "__main__":
    main()
