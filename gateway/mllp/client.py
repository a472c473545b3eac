"""A small blocking MLLP client (``carebridge hl7 send``, tests, benchmark).

Blocking on purpose: the CLI sends files one after another and waits for
each answer (HL7 v2.5 ch. 2.9.2: the sender waits for the ACK before sending
the next message when order matters).  Reads go through the same
:class:`~gateway.mllp.framing.FrameDecoder` as the listener.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from dataclasses import dataclass

from gateway.mllp.framing import Frame, FrameDecoder, frame
from mappers import CHARSETS, COMMIT_ACK_CODES, EncodingChars, unescape


@dataclass(frozen=True, slots=True)
class AckInfo:
    """The parts of an ACK a sender acts on."""

    code: str  # MSA-1
    control_id: str  # MSA-2 (the acknowledged message's MSH-10)
    text: str  # ERR-8, else MSA-3, else ERR-1 component text ("" on success)
    raw: bytes

    @property
    def is_commit(self) -> bool:
        return self.code in COMMIT_ACK_CODES


def parse_ack(raw: bytes) -> AckInfo:
    """Read MSA and ERR from an ACK (tolerant: unknown layouts give empty values)."""
    data = raw.lstrip(b"\xef\xbb\xbf\r\n\x0b")
    first = data.split(b"\r", 1)[0].split(b"\n", 1)[0]
    fs = chr(first[3]) if len(first) > 7 else "|"
    chars = first[4:8].decode("latin-1") if len(first) > 7 else "^~\\&"
    enc = EncodingChars(fs, chars[0], chars[1], chars[2], chars[3])
    fields18 = first.decode("latin-1").split(fs)
    label = fields18[17].split(enc.component)[0].strip().upper() if len(fields18) > 17 else ""
    codec = CHARSETS.get(label, "utf-8")
    text = data.decode(codec, errors="replace")
    code = control_id = msa_text = err_text = err_old = ""
    for line in text.replace("\r\n", "\r").replace("\n", "\r").split("\r"):
        parts = line.split(fs)
        if parts[0] == "MSA":
            code = parts[1] if len(parts) > 1 else ""
            control_id = unescape(parts[2], enc, codec) if len(parts) > 2 else ""
            msa_text = unescape(parts[3], enc, codec) if len(parts) > 3 else ""
        elif parts[0] == "ERR":
            if len(parts) > 8 and parts[8] and not err_text:
                err_text = unescape(parts[8], enc, codec)
            elif len(parts) > 1 and parts[1] and not err_old:
                subs = parts[1].split(enc.component)[-1].split(enc.subcomponent)
                err_old = unescape(subs[1] if len(subs) > 1 else subs[0], enc, codec)
    return AckInfo(code.strip(), control_id.strip(), err_text or msa_text or err_old, raw)


class MllpClient:
    """One MLLP connection.  ``request()`` sends a message and returns the first answer."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        max_message_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if ssl_context is not None:
            sock = ssl_context.wrap_socket(sock, server_hostname=server_hostname or host)
        self.sock = sock
        self.timeout = timeout
        self._decoder = FrameDecoder(max_message_bytes)
        self._frames: list[bytes] = []

    def __enter__(self) -> MllpClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def send(self, payload: bytes) -> None:
        self.sock.sendall(frame(payload))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_frame(self, timeout: float | None = None) -> bytes | None:
        """Next answer, or None when ``timeout`` passes or the server closes the connection."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self._frames:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                return None
            self._frames += [e.payload for e in self._decoder.feed(data) if isinstance(e, Frame)]
        return self._frames.pop(0)

    def request(self, payload: bytes, timeout: float | None = None) -> bytes | None:
        self.send(payload)
        return self.read_frame(timeout)

    def exchange(self, payload: bytes, *, follow_up: float = 1.0) -> AckInfo | None:
        """Send one message and return its final ACK.

        After an enhanced-mode commit ACK (CA/CE/CR), wait ``follow_up`` seconds
        for the application ACK that may follow and prefer it.
        """
        first = self.request(payload)
        if first is None:
            return None
        ack = parse_ack(first)
        if ack.is_commit:
            second = self.read_frame(follow_up)
            if second is not None:
                return parse_ack(second)
        return ack
