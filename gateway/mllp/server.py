"""The asyncio MLLP listener (HL7 v2.5 Appendix C; default port 2575).

This module is a thin adapter: bytes in, :class:`~gateway.ingest.Ingestor`
calls, ACK frames out.  What it guarantees on its own:

* framing across split reads and several messages per read
  (:mod:`gateway.mllp.framing`), bounded memory per connection
  (``mllp_max_message_bytes``: an oversized message gets AR and its head is
  journaled, the connection stays usable), an idle timeout;
* bounded connections (:mod:`gateway.mllp.limits`): in total and per peer
  address, under the open-file limit read at start; an excess connection is
  closed at once (counted, and logged as one warning however many arrive);
* isolation: every connection is its own task and every failure is caught at
  the connection or message boundary, so a broken frame, a TLS error or a
  database outage never stops the listener or other connections;
* order: a connection's messages are processed one after another, and every
  message about one patient goes to the same writer lane (a FIFO thread,
  :mod:`gateway.mllp.lanes`), so they are applied in arrival order across
  connections;
* throughput: the loop only frames, parses and maps; lanes apply what is
  waiting in one transaction when they can (group commit,
  :mod:`gateway.ingest_group`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from common import PayloadTooLarge
from fhir_store import JOURNAL_REJECTED, journal_insert_message
from gateway.ingest import Ingestor
from gateway.ingest_model import Inbound, InternalError
from gateway.logging_setup import get_logger
from gateway.metrics import UNKNOWN, hl7_counters, message_type_label
from gateway.mllp.framing import Frame, FrameDecoder, Oversized, frame
from gateway.mllp.lanes import IngestLanes
from gateway.mllp.limits import ACCEPT_BACKLOG, ConnectionGate, connection_limits, open_file_limit
from gateway.mllp.tls import peer_identity, sender_policy, server_context
from mappers import build_fallback_ack

if TYPE_CHECKING:
    from gateway.runtime import Runtime

log = get_logger("carebridge.mllp")

READ_SIZE = 64 * 1024


class MllpServer:
    def __init__(
        self,
        runtime: Runtime,
        host: str,
        port: int,
        *,
        ingestor: Ingestor | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        settings = runtime.settings
        self.host = host
        self.port = port
        self.settings = settings
        self.ingestor = ingestor or Ingestor(
            runtime.store, settings, policy=sender_policy(settings.mllp), metrics=hl7_counters(runtime)
        )
        self.ssl_context = ssl_context if ssl_context is not None else server_context(settings.mllp)
        self.max_message_bytes = settings.mllp.max_message_bytes
        self.idle_timeout = settings.mllp.idle_timeout_s
        self._lanes: IngestLanes | None = None
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mllp-db")
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._gate = ConnectionGate(connection_limits(settings.mllp, None))

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def _limit_connections(self) -> None:
        """Read the open-file limit, fit the connection caps under it and say so (one line, or a warning)."""
        soft, hard = open_file_limit()
        limits = connection_limits(self.settings.mllp, soft)
        self._gate = ConnectionGate(limits)
        log.info(
            "open file limit",
            open_files_soft=soft,
            open_files_hard=hard,
            mllp_max_connections=limits.total,
            mllp_max_connections_per_peer=limits.per_peer,
        )
        if limits.clamped:
            log.warning(
                "open file limit too low: MLLP connection caps lowered (raise `ulimit -n` or the caps)",
                settings=",".join(limits.clamped),
                open_files_soft=soft,
                mllp_max_connections=limits.total,
                mllp_max_connections_per_peer=limits.per_peer,
            )

    async def start(self) -> None:
        self._limit_connections()
        self._lanes = IngestLanes(
            self.ingestor, lanes=self.settings.hl7.ingest_lanes, group_max=self.settings.hl7.group_max
        )
        if self.ssl_context is not None:
            self._server = await asyncio.start_server(
                self._on_client,
                self.host,
                self.port,
                ssl=self.ssl_context,
                ssl_handshake_timeout=15.0,
                backlog=ACCEPT_BACKLOG,
            )
        else:
            self._server = await asyncio.start_server(
                self._on_client, self.host, self.port, backlog=ACCEPT_BACKLOG
            )
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("mllp listening", host=self.host, port=self.port, tls=self.ssl_context is not None)
        if self.ingestor.open_senders:
            log.warning(
                "MLLP OPEN MODE: any sender is accepted (CAREBRIDGE_MLLP_OPEN=true); whoever reaches this"
                " port can change patient records. For demos and local trials only.",
                host=self.host,
                port=self.port,
            )

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
        if self._lanes is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._lanes.stop)
        self._executor.shutdown(wait=True, cancel_futures=False)

    def _refuse(self, writer: asyncio.StreamWriter, address: str, reason: str) -> None:
        """Close an excess connection at once (no read, no ACK): it must not hold a descriptor."""
        writer.transport.abort()
        self.ingestor.metrics.connection_refused(reason)
        limits = self._gate.limits
        log.warning(
            "mllp connection refused: too many connections",
            reason=reason,
            peer=address,
            limit=limits.total if reason == "total" else limits.per_peer,
        )

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = f"{peername[0]}:{peername[1]}" if isinstance(peername, tuple) else str(peername or "")
        address = str(peername[0]) if isinstance(peername, tuple) else peer
        refused = self._gate.admit(address)
        if refused is not None:
            self._refuse(writer, address, refused)
            return
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        identity = peer_identity(writer.get_extra_info("peercert")) if self.ssl_context else None
        log.debug("mllp connection", peer=peer, identity=identity)
        decoder = FrameDecoder(self.max_message_bytes)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(READ_SIZE), self.idle_timeout)
                except TimeoutError:
                    log.info("mllp idle timeout", peer=peer)
                    break
                if not data:
                    break
                for event in decoder.feed(data):
                    if isinstance(event, Frame):
                        await self._message(event.payload, peer, identity, writer)
                    elif isinstance(event, Oversized):
                        await self._oversized(event, peer, writer)
        except asyncio.CancelledError:
            pass
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            log.info("mllp connection error", peer=peer, error_type=type(exc).__name__)
        except Exception as exc:  # never let one connection take the listener down
            log.error("mllp connection failed", peer=peer, error_type=type(exc).__name__)
        finally:
            self._gate.release(address)
            if task is not None:
                self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)

    async def _message(
        self, payload: bytes, peer: str, identity: str | None, writer: asyncio.StreamWriter
    ) -> None:
        loop = asyncio.get_running_loop()
        inbound = self.ingestor.prepare(payload, peer=peer, identity=identity)

        def on_commit(ack: bytes) -> None:  # called in the lane thread
            loop.call_soon_threadsafe(writer.write, frame(ack))

        try:
            assert self._lanes is not None, "start() first"
            outcome = await self._lanes.submit(inbound, on_commit)
            acks = outcome.acks
        except Exception as exc:  # journal unavailable: nothing committed, the sender must retry
            log.error("mllp message failed", peer=peer, error_type=type(exc).__name__)
            acks = [self._internal_error_ack(inbound)]
            self.ingestor.metrics.answered(message_type_label(inbound.header), "AE")
        for ack in acks:
            writer.write(frame(ack))
        await writer.drain()

    def _internal_error_ack(self, inbound: Inbound) -> bytes:
        error = InternalError("the message could not be stored; please retry")
        return build_fallback_ack(inbound.raw, error, control_id="ERR", ack_code="AE")

    async def _oversized(self, event: Oversized, peer: str, writer: asyncio.StreamWriter) -> None:
        error = PayloadTooLarge(
            f"message of {event.size} bytes exceeds the limit of {self.max_message_bytes} bytes"
            " (CAREBRIDGE_MLLP_MAX_MESSAGE_BYTES)",
            location="MSH",
        )
        msh_line = event.head.replace(b"\n", b"\r").split(b"\r", 1)[0]  # the head may end mid-character
        ack = build_fallback_ack(msh_line, error, control_id="OVERSIZE", ack_code="AR")
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            await loop.run_in_executor(
                self._executor,
                lambda: journal_insert_message(
                    self.ingestor.engine,
                    raw=event.head,
                    peer=peer,
                    sending_application="",
                    sending_facility="",
                    control_id="",
                    message_type="",
                    status=JOURNAL_REJECTED,
                    cipher=self.ingestor.store.cipher,
                    ack_code="AR",
                    ack=ack,
                    error=f"{error} (only the first {len(event.head)} bytes are kept)",
                ),
            )
        log.info("mllp oversized message", peer=peer, size=event.size)
        self.ingestor.metrics.received(UNKNOWN)
        self.ingestor.metrics.answered(UNKNOWN, "AR")
        writer.write(frame(ack))
        await writer.drain()
