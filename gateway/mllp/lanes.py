"""Writer lanes between the MLLP event loop and the database.

Each lane is one thread with a FIFO queue.  A message goes to the lane chosen
by its patient key, so one patient's messages are applied one after another
in arrival order across every connection (HL7 v2 has no other way to say
"this A08 comes after that A04"), while different patients proceed on other
lanes.  A lane takes everything waiting in its queue (up to ``group_max``)
and hands it to :func:`gateway.ingest_group.process_group`, which applies
the messages in one transaction when it can: under load the batch grows by
itself and commits get shared, with no added wait when the feed is quiet.

Futures are completed on the event loop; an exception (database down) fails
every message of that batch, and the listener answers each with an AE so
the sender retries.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import zlib
from dataclasses import dataclass

from gateway.ingest import Ingestor
from gateway.ingest_group import OnCommit, process_group
from gateway.ingest_model import Inbound, Outcome
from gateway.logging_setup import get_logger

log = get_logger("carebridge.mllp")


@dataclass(frozen=True, slots=True)
class _Job:
    inbound: Inbound
    on_commit: OnCommit
    future: asyncio.Future[Outcome]
    loop: asyncio.AbstractEventLoop


def _settle(future: asyncio.Future[Outcome], outcome: Outcome | None, error: BaseException | None) -> None:
    if future.done():
        return  # the connection went away meanwhile
    if error is not None:
        future.set_exception(error)
    else:
        assert outcome is not None
        future.set_result(outcome)


class IngestLanes:
    def __init__(self, ingestor: Ingestor, *, lanes: int = 2, group_max: int = 32) -> None:
        self.ingestor = ingestor
        self.group_max = max(1, group_max)
        self._queues: list[queue.SimpleQueue[_Job | None]] = [
            queue.SimpleQueue() for _ in range(max(1, lanes))
        ]
        self._threads = [
            threading.Thread(target=self._run, args=(q,), name=f"mllp-lane-{n}", daemon=True)
            for n, q in enumerate(self._queues)
        ]
        for thread in self._threads:
            thread.start()

    def _lane(self, inbound: Inbound) -> queue.SimpleQueue[_Job | None]:
        key = inbound.patient_key or (inbound.header.control_id if inbound.header else "")
        return self._queues[zlib.crc32(key.encode("utf-8", "replace")) % len(self._queues)]

    def submit(self, inbound: Inbound, on_commit: OnCommit = None) -> asyncio.Future[Outcome]:
        """Queue ``inbound`` (call on the event loop, in arrival order); the future gets its outcome."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        self._lane(inbound).put(_Job(inbound, on_commit, future, loop))
        return future

    def _run(self, jobs: queue.SimpleQueue[_Job | None]) -> None:
        while True:
            first = jobs.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.group_max:
                try:
                    job = jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    stop = True
                    break
                batch.append(job)
            self._process(batch)
            if stop:
                return

    def _process(self, batch: list[_Job]) -> None:
        try:
            outcomes = process_group(self.ingestor, [(job.inbound, job.on_commit) for job in batch])
        except Exception as exc:  # e.g. the database is unreachable: nothing was committed
            log.error("mllp lane failed", messages=len(batch), error_type=type(exc).__name__)
            for job in batch:
                with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
                    job.loop.call_soon_threadsafe(_settle, job.future, None, exc)
            return
        for job, outcome in zip(batch, outcomes, strict=True):
            with contextlib.suppress(RuntimeError):
                job.loop.call_soon_threadsafe(_settle, job.future, outcome, None)

    def stop(self, timeout: float = 30.0) -> None:
        """Finish what is queued, then end the lane threads."""
        for jobs in self._queues:
            jobs.put(None)
        for thread in self._threads:
            thread.join(timeout)
