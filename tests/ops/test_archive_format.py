"""The encrypted archive format on its own: many chunks, and every way of rearranging them fails."""

from __future__ import annotations

import io
import os
import struct

import pytest

from gateway.backup_archive import TamperedArchive, WrongKey, decrypt_stream, encrypt_stream

KEY = bytes(range(32))
HEADER = 29


def seal(data: bytes, chunk: int = 64) -> bytes:
    out = io.BytesIO()
    assert encrypt_stream(io.BytesIO(data), out, KEY, "postgresql", chunk_size=chunk) == len(data)
    return out.getvalue()


def chunks(archive: bytes) -> list[bytes]:
    body, out = archive[HEADER:], []
    while body:
        (length,) = struct.unpack(">I", body[:4])
        out.append(body[: 4 + length])
        body = body[4 + length :]
    return out


def open_(archive: bytes, key: bytes = KEY) -> bytes:
    out = io.BytesIO()
    assert decrypt_stream(io.BytesIO(archive), out, key) == "postgresql"
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 640, 1000])
def test_round_trip_at_chunk_boundaries(size: int) -> None:
    data = os.urandom(size)
    assert open_(seal(data)) == data


def test_reordered_dropped_or_duplicated_chunks_are_refused() -> None:
    archive = seal(os.urandom(300))
    header, parts = archive[:HEADER], chunks(archive)
    assert len(parts) == 5
    variants = {
        "swap": [parts[1], parts[0], *parts[2:]],
        "drop middle": [parts[0], *parts[2:]],
        "drop last": parts[:-1],
        "duplicate": [parts[0], *parts],
    }
    for name, body in variants.items():
        with pytest.raises(TamperedArchive):
            open_(header + b"".join(body))
            pytest.fail(name)


def test_wrong_key_is_named_as_such() -> None:
    with pytest.raises(WrongKey, match="wrong backup key"):
        open_(seal(b"x" * 100), bytes(32))
