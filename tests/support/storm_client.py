"""Search storm from outside the server's process (issue #17, tests/http/test_search_storm.py).

The storm comes from a separate process, as an attacker's clients would: run in the
test's own process, forty client threads would compete with the server under test
for one interpreter lock, and the ACK latency measured would be the test harness's.

Usage: ``python -m tests.support.storm_client URL PARALLEL`` with the request headers
as one JSON object on stdin's first line; the storm runs until stdin's next line (or
end of file), then the status of every answered search is printed as a JSON list.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx


async def storm(url: str, parallel: int, headers: dict[str, str]) -> list[int]:
    statuses: list[int] = []
    stop = asyncio.Event()

    async def searcher(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            statuses.append((await client.get(url)).status_code)

    limits = httpx.Limits(max_connections=parallel, max_keepalive_connections=parallel)
    async with httpx.AsyncClient(headers=headers, timeout=60, limits=limits) as client:
        tasks = [asyncio.create_task(searcher(client)) for _ in range(parallel)]
        await asyncio.to_thread(sys.stdin.readline)  # the test says stop
        stop.set()
        await asyncio.gather(*tasks)
    return statuses


def main() -> None:
    url, parallel = sys.argv[1], int(sys.argv[2])
    headers = json.loads(sys.stdin.readline())
    print("started", flush=True)
    print(json.dumps(asyncio.run(storm(url, parallel, headers))), flush=True)


if __name__ == "__main__":
    main()
