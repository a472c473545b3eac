"""A small closed-loop HTTP/1.1 load generator over raw asyncio sockets.

Why not httpx/aiohttp: on a 2-core machine the load generator competes with
the server for CPU, so it must be as cheap as possible per request.  Each
"client" is one keep-alive connection issuing requests back to back; the
result is throughput and latency percentiles.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class LoadResult:
    name: str
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return 0.0
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def row(self) -> str:
        return (
            f"| {self.name} | {self.requests} | {self.rps:,.0f} | {self.percentile(0.5):.1f} | "
            f"{self.percentile(0.99):.1f} | {self.errors} |"
        )


RequestFactory = Callable[[int], tuple[str, str, bytes, dict[str, str]]]  # i -> method, path, body, headers


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    chunked = False
    for line in lines[1:]:
        key, _, value = line.partition(b":")
        key = key.strip().lower()
        if key == b"content-length":
            length = int(value.strip())
        elif key == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
    if chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status


async def _client(
    host: str,
    port: int,
    factory: RequestFactory,
    counter: list[int],
    total: int,
    deadline: float,
    latencies: list[float],
    errors: list[int],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while counter[0] < total and time.perf_counter() < deadline:
            index = counter[0]
            counter[0] += 1
            method, path, body, headers = factory(index)
            head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
            head += [f"{k}: {v}" for k, v in headers.items()]
            writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            started = time.perf_counter()
            status = await _read_response(reader)
            latencies.append((time.perf_counter() - started) * 1000)
            if status >= 400:
                errors[0] += 1
    finally:
        writer.close()


async def run_load(
    name: str,
    host: str,
    port: int,
    factory: RequestFactory,
    *,
    clients: int,
    total: int,
    max_seconds: float = 30.0,
) -> LoadResult:
    counter, latencies, errors = [0], [], [0]
    started = time.perf_counter()
    deadline = started + max_seconds
    await asyncio.gather(
        *(_client(host, port, factory, counter, total, deadline, latencies, errors) for _ in range(clients))
    )
    elapsed = time.perf_counter() - started
    return LoadResult(name, len(latencies), errors[0], elapsed, latencies)


def summarize(results: list[LoadResult]) -> str:
    lines = ["| scenario | requests | req/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    lines += [r.row() for r in results]
    return "\n".join(lines)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0
