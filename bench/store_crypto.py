"""CPU cost of the store's encryption at rest: per primitive and per store operation.

    .venv/bin/python -m bench.store_crypto [--ops 2000] [--rounds 5]

Reports CPU microseconds (``time.process_time``, the process's own CPU: the
benchmark machine is shared, wall clock is noise) for

* the primitives on a typical Patient (seal, open, one blind-index HMAC,
  the index extraction of one Patient with blinding), and
* ``FhirStore`` create and read by id on a temporary SQLite database, once
  with the real :class:`StoreCipher` and once with a pass-through cipher
  (a benchmark-only stand-in: production has no switch to turn encryption off),
  alternating rounds and keeping the median.

Paste the Markdown table into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.fhir_load import synthetic_patient
from fhir_store import (
    Create,
    FhirStore,
    RequestContext,
    StoreCipher,
    extract_index_rows,
    make_engine,
    open_cipher,
    upgrade,
)

CTX = RequestContext("bench-crypto")


class PassThroughCipher(StoreCipher):
    """No encryption, no blinding: the baseline the overhead is measured against."""

    def seal_resource(self, resource_type: str, resource_id: str, version: int, content: bytes) -> bytes:
        return content

    def open_resource(self, resource_type: str, resource_id: str, version: int, stored: bytes) -> bytes:
        return stored

    def blind(self, value: str) -> str:
        return value


def patient(i: int) -> dict[str, Any]:
    body = synthetic_patient(i, "CRYPTO")
    body["identifier"] += [
        {"system": "https://id.carebridge.vn/cccd", "value": f"0790{i:08d}"},
        {"system": "https://id.carebridge.vn/bhyt", "value": f"DN47979{i:08d}"},
    ]
    body["telecom"].append({"system": "email", "value": f"p{i}@example.vn"})
    return body


def cpu_us(n: int, work: Callable[[int], object]) -> float:
    start = time.process_time()
    for i in range(n):
        work(i)
    return (time.process_time() - start) / n * 1e6


def primitives(cipher: StoreCipher, n: int) -> dict[str, float]:
    body = {**patient(1), "id": "b1f0c3a2-0000-4000-8000-000000000001", "meta": {"versionId": "1"}}
    content = orjson.dumps(body)
    sealed = cipher.seal_resource("Patient", body["id"], 1, content)
    plain = PassThroughCipher(cipher.keys, cipher.blind_kid)
    print(f"Patient JSON {len(content)} bytes, sealed {len(sealed)} bytes")
    return {
        "seal (AES-256-GCM)": cpu_us(n, lambda i: cipher.seal_resource("Patient", body["id"], 1, content)),
        "open (AES-256-GCM)": cpu_us(n, lambda i: cipher.open_resource("Patient", body["id"], 1, sealed)),
        "blind one value (HMAC-SHA256)": cpu_us(n, lambda i: cipher.blind(f"0790{i:08d}")),
        "index rows, blinded": cpu_us(n, lambda i: extract_index_rows(body, cipher.blind)),
        "index rows, clear": cpu_us(n, lambda i: extract_index_rows(body, plain.blind)),
    }


def store_ops(cipher_for: Callable[[Any], StoreCipher], n: int, workdir: Path, tag: str) -> dict[str, float]:
    url = f"sqlite:///{workdir / f'{tag}.db'}"
    upgrade(url)
    engine = make_engine(url, pool_size=2)
    store = FhirStore(engine, cipher=cipher_for(engine))
    ids: list[str] = []

    def create(i: int) -> None:
        stored = store.transact([Create(patient(i))], CTX, validate=False)[0].stored
        assert stored is not None
        ids.append(stored.id)

    created = cpu_us(n, create)
    read = cpu_us(n, lambda i: store.read("Patient", ids[i]))
    engine.dispose()
    return {"create": created, "read by id": read}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cb-crypto-"))
    upgrade(f"sqlite:///{work / 'keys.db'}")
    keys_engine = make_engine(f"sqlite:///{work / 'keys.db'}", pool_size=1)
    cipher = open_cipher(keys_engine, str(work / "store-keys.json"))
    prims = [primitives(cipher, args.ops * 10) for _ in range(args.rounds)]  # prints the sizes
    runs: dict[str, list[dict[str, float]]] = {"encrypted": [], "pass-through": []}
    for r in range(args.rounds):
        runs["encrypted"].append(
            store_ops(lambda e: open_cipher(e, str(work / "store-keys.json")), args.ops, work, f"enc{r}")
        )
        runs["pass-through"].append(
            store_ops(
                lambda e: PassThroughCipher(open_cipher(e, str(work / "pt.json")).keys, "b1"),
                args.ops,
                work,
                f"pt{r}",
            )
        )
    print(f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"{args.rounds} rounds, median; CPU µs per operation (process time)\n")
    print("| primitive | CPU µs |\n|---|---:|")
    for name in prims[0]:
        print(f"| {name} | {statistics.median(p[name] for p in prims):.1f} |")
    print("\n| store operation (SQLite) | encrypted | pass-through | difference |\n|---|---:|---:|---:|")
    for name in runs["encrypted"][0]:
        enc = statistics.median(r[name] for r in runs["encrypted"])
        plain = statistics.median(r[name] for r in runs["pass-through"])
        print(f"| {name} | {enc:.0f} | {plain:.0f} | {enc - plain:+.0f} ({(enc - plain) / plain:+.0%}) |")


if __name__ == "__main__":
    main()
