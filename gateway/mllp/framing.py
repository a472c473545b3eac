"""MLLP framing (HL7 v2.5 Appendix C.4.2, "Block format").

A TCP stream is not message-oriented: one ``read()`` may hold half a frame,
or several frames, or noise between frames.  :class:`FrameDecoder` is a pure,
incremental state machine fed with whatever the socket returns; it yields
complete payloads and never raises on bad input, so a broken frame can only
ever cost the sender that one message, not the connection or the listener.

Tolerances (real senders get these wrong):

* bytes outside a frame (before ``SB``) are discarded and reported as noise;
* the frame ends at ``EB``; the ``CR`` after it is optional and skipped when
  present (some senders omit it, and it may arrive in the next read);
* a new ``SB`` inside an unfinished frame abandons the unfinished one (the
  sender evidently restarted).

A frame larger than ``max_size`` is not buffered: the decoder keeps skipping
until its ``EB`` and then reports :class:`Oversized` once, so memory stays
bounded by ``max_size`` per connection whatever the peer sends.
"""

from __future__ import annotations

from dataclasses import dataclass

SB = b"\x0b"
EB = b"\x1c"
CR = b"\r"
_SB = 0x0B
_EB = 0x1C


def frame(payload: bytes) -> bytes:
    """Wrap one message in an MLLP block."""
    return SB + payload + EB + CR


@dataclass(frozen=True, slots=True)
class Frame:
    """A complete payload (between SB and EB)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Oversized:
    """A frame that exceeded the limit; ``size`` bytes were discarded; ``head`` is its start."""

    size: int
    head: bytes


@dataclass(frozen=True, slots=True)
class Noise:
    """Bytes received outside any frame (discarded)."""

    size: int


Event = Frame | Oversized | Noise


class FrameDecoder:
    """Incremental MLLP decoder: ``feed(data)`` returns the events completed by ``data``."""

    __slots__ = ("_buf", "_head", "_in_frame", "_max", "_skip_cr", "_skipped")

    def __init__(self, max_size: int) -> None:
        self._max = max_size
        self._buf = bytearray()
        self._in_frame = False
        self._skipped = -1  # >= 0 while discarding an oversized frame
        self._head = b""
        self._skip_cr = False

    @property
    def pending(self) -> int:
        """Bytes buffered for an unfinished frame (0 between frames)."""
        return len(self._buf) if self._in_frame else 0

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        pos = 0
        n = len(data)
        while pos < n:
            if self._skip_cr:
                self._skip_cr = False
                if data[pos] == 0x0D:
                    pos += 1
                    continue
            if not self._in_frame:
                start = data.find(SB, pos)
                if start < 0:
                    events.append(Noise(n - pos))
                    break
                if start > pos:
                    events.append(Noise(start - pos))
                self._in_frame = True
                self._buf.clear()
                self._skipped = -1
                pos = start + 1
                continue
            end = data.find(EB, pos)
            restart = data.find(SB, pos, end if end >= 0 else n)
            if restart >= 0:  # a new block began before this one ended: drop the broken one
                events.append(Noise(len(self._buf) + restart - pos + 1))
                self._in_frame = False
                pos = restart
                continue
            chunk_end = n if end < 0 else end
            self._append(data, pos, chunk_end)
            if end < 0:
                break
            events.append(self._finish())
            pos = end + 1
            self._skip_cr = True
        return events

    def _append(self, data: bytes, start: int, end: int) -> None:
        if self._skipped >= 0:
            self._skipped += end - start
            return
        self._buf += data[start:end]
        if len(self._buf) > self._max:
            self._head = bytes(self._buf[:4096])
            self._skipped = len(self._buf)
            self._buf.clear()

    def _finish(self) -> Event:
        self._in_frame = False
        if self._skipped >= 0:
            event: Event = Oversized(self._skipped, self._head)
            self._skipped = -1
            self._head = b""
            return event
        payload = bytes(self._buf)
        self._buf.clear()
        return Frame(payload)
