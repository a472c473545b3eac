"""Cost per call of the phone rule (common.phones) against the hand-written normaliser it replaced.

    .venv/bin/python bench/phone_normalise.py [--repeat 5] [--number 20000]

Prints CPU microseconds per call (best of ``--repeat`` runs of ``--number`` calls)
for each input shape, for: the former hand-written normaliser (copied here as
the reference), libphonenumber alone (``normalize_phone_slow``, the rule) and
``normalize_phone`` (fast path, else the rule); then the cost of mapping the
A04 sample (``mappers.router.map_message``) with and without the fast path.
Single process, single thread.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import common.phones as phones  # noqa: E402
from mappers import map_message, parse_message  # noqa: E402

SAMPLE = ROOT / "tests" / "fixtures" / "hl7v2" / "adt_a04_register_outpatient.hl7"
SHAPES = {
    "0912345678 (HL7, local)": "0912345678",
    "+84912345678 (E.164)": "+84912345678",
    "0912 000 111 (typed)": "0912 000 111",
    "+84 (0) 912 345 678": "+84 (0) 912 345 678",
    "0084912345678": "0084912345678",
    "call me (unreadable)": "call me",
}


def hand_written(raw: str) -> str | None:
    """The normaliser of mappers.datatypes before the phone rule (the reference)."""
    digits = re.sub(r"[\s.\-()/]", "", raw)
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if digits.startswith("+"):
        rest = digits[1:]
        if rest.isdigit() and 8 <= len(rest) <= 15:
            if rest.startswith("840"):
                rest = "84" + rest[3:]
            return "+" + rest
        return None
    if not digits.isdigit():
        return None
    if digits.startswith("0") and len(digits) in (10, 11):
        return "+84" + digits[1:]
    if digits.startswith("84") and len(digits) in (11, 12):
        return "+" + digits
    return None


def per_call_us(fn: Callable[[], object], repeat: int, number: int) -> float:
    # process CPU time, not wall time: the host is shared, waiting for a core is not our cost
    return min(timeit.repeat(fn, repeat=repeat, number=number, timer=time.process_time)) / number * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()
    fast, slow = phones.normalize_phone, phones.normalize_phone_slow
    print(f"{'input':28} {'hand-written':>13} {'phonenumbers':>13} {'normalize_phone':>16}  (µs/call)")
    for label, raw in SHAPES.items():
        cells = [
            per_call_us(lambda f=f, r=raw: f(r), args.repeat, args.number) for f in (hand_written, slow, fast)
        ]
        print(f"{label:28} {cells[0]:13.2f} {cells[1]:13.2f} {cells[2]:16.2f}")

    raw_msg = SAMPLE.read_bytes()
    number = max(args.number // 20, 200)

    def map_a04() -> object:
        return map_message(parse_message(raw_msg))

    # interleaved A/B rounds (best of each), so a load change on a shared host hits both
    with_fast, without = float("inf"), float("inf")
    for _ in range(args.repeat):
        with_fast = min(with_fast, per_call_us(map_a04, 1, number))
        phones.normalize_phone = slow  # every phone through libphonenumber
        try:
            without = min(without, per_call_us(map_a04, 1, number))
        finally:
            phones.normalize_phone = fast
    print(
        f"parse + map A04 (2 phones: PID-13, NK1-5): fast path {with_fast:.1f} µs, "
        f"libphonenumber only {without:.1f} µs per message"
    )


if __name__ == "__main__":
    main()
