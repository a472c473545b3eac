"""MLLP block decoding (HL7 v2.5 Appendix C.4.2) on its own: no sockets, no database."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.mllp.client import parse_ack
from gateway.mllp.framing import Frame, FrameDecoder, Noise, Oversized, frame


def frames(events: Sequence[object]) -> list[bytes]:
    return [e.payload for e in events if isinstance(e, Frame)]


def test_split_reads_byte_by_byte() -> None:
    decoder = FrameDecoder(1024)
    out: list[object] = []
    for byte in frame(b"MSH|a") + frame(b"MSH|b"):
        out += decoder.feed(bytes([byte]))
    assert frames(out) == [b"MSH|a", b"MSH|b"]


def test_several_frames_in_one_read_and_noise_between() -> None:
    events = FrameDecoder(1024).feed(b"junk" + frame(b"one") + b"\r\n" + frame(b"two") + frame(b"three"))
    assert frames(events) == [b"one", b"two", b"three"]
    assert any(isinstance(e, Noise) for e in events)


def test_missing_cr_after_eb_and_cr_in_next_read() -> None:
    decoder = FrameDecoder(1024)
    assert frames(decoder.feed(b"\x0bone\x1c")) == [b"one"]
    assert frames(decoder.feed(b"\r\x0btwo\x1c\r")) == [b"two"]


def test_restart_inside_a_frame_drops_the_broken_one() -> None:
    events = FrameDecoder(1024).feed(b"\x0bbroken part" + frame(b"good"))
    assert frames(events) == [b"good"]


def test_oversized_frame_is_skipped_with_bounded_memory() -> None:
    decoder = FrameDecoder(100)
    events = decoder.feed(b"\x0b" + b"MSH|" + b"x" * 150)
    assert events == [] and decoder.pending <= 100
    events = decoder.feed(b"y" * 10_000)
    assert decoder.pending <= 100
    events = decoder.feed(b"\x1c\r" + frame(b"next"))
    assert isinstance(events[0], Oversized) and events[0].size == 4 + 150 + 10_000
    assert events[0].head.startswith(b"MSH|")
    assert frames(events) == [b"next"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=12), st.lists(st.integers(1, 50), min_size=1))
def test_any_bytes_any_split_never_raise_and_frames_survive(chunks: list[bytes], cuts: list[int]) -> None:
    clean = [c.replace(b"\x0b", b"").replace(b"\x1c", b"") for c in chunks]
    stream = b"".join(frame(c) for c in clean)
    decoder = FrameDecoder(1 << 20)
    out: list[object] = []
    pos = 0
    i = 0
    while pos < len(stream):
        step = cuts[i % len(cuts)]
        out += decoder.feed(stream[pos : pos + step])
        pos += step
        i += 1
    assert frames(out) == clean


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_garbage_never_raises(data: bytes) -> None:
    decoder = FrameDecoder(64)
    decoder.feed(data)
    assert frames(decoder.feed(frame(b"MSH|ok"))) == [b"MSH|ok"]


def test_parse_ack_reads_err8_and_old_style_msa3() -> None:
    new = b"MSH|^~\\&|A|B|C|D|20260101||ACK^A04^ACK|1|P|2.5\rMSA|AE|X1\rERR||PID^1^7|102^Data type error^HL70357|E||||bad \\F\\ date"
    ack = parse_ack(new)
    assert (ack.code, ack.control_id, ack.text) == ("AE", "X1", "bad | date")
    old = b"MSH|^~\\&|A|B|C|D|20260101||ACK|1|P|2.3\rMSA|AR|X2|unsupported\rERR|MSH^1^9^102&Data type error&HL70357"
    assert parse_ack(old).text == "unsupported"
