"""Anchors POSTed to an external witness: delivered in order, failures counted and retried, never raised."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine

from audit import Anchor, Anchorer, read_anchors
from audit.checkpoints import AuditKeys
from audit.hooks import AuditHook
from tests.audit.conftest import CTX


class Witness:
    """A loopback HTTP endpoint that records the bodies it accepted; answers 503 while ``down``."""

    def __init__(self) -> None:
        received: list[bytes] = []
        witness = self
        self.down = True

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if witness.down:
                    self.send_response(503)
                else:
                    received.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.received = received
        self.server = HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/anchors"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def witness() -> Iterator[Witness]:
    w = Witness()
    yield w
    if w.thread.is_alive():
        w.stop()


def test_anchors_are_posted_and_failures_retried(
    engine: Engine, keys: AuditKeys, tmp_path: Path, witness: Witness
) -> None:
    anchor_file = tmp_path / "audit-anchors.jsonl"
    anchorer = Anchorer(anchor_file, witness.url, timeout_s=2.0)
    hook = AuditHook(engine, keys, async_reads=False, checkpoint_interval_s=3600.0, anchorer=anchorer)
    witness.start()
    hook.record_denial(CTX, "read")
    assert hook.checkpoint() == 1  # the witness answers 503: counted, not raised
    assert anchorer.post_failures == 1 and witness.received == []
    assert [a.seq for a in read_anchors(anchor_file)] == [1]  # the file got it regardless
    witness.down = False
    hook.record_denial(CTX, "read")
    hook.close()  # shutdown checkpoint at 2; the pending anchor 1 is retried first
    posted = [Anchor.parse(body.decode()) for body in witness.received]
    assert [a.seq for a in posted] == [1, 2]
    assert posted == read_anchors(anchor_file)
    assert set(orjson.loads(witness.received[0])) == {
        "seq",
        "hash",
        "signature",
        "key_id",
        "created_us",
        "time",
    }
    assert anchorer.post_failures == 1


def test_anchor_file_resumes_and_restarts_for_another_database(
    engine: Engine, keys: AuditKeys, tmp_path: Path
) -> None:
    anchor_file = tmp_path / "audit-anchors.jsonl"
    for _ in range(2):  # two service runs: the second appends only its own new checkpoint
        hook = AuditHook(
            engine, keys, async_reads=False, checkpoint_interval_s=3600.0, anchorer=Anchorer(anchor_file)
        )
        hook.record_denial(CTX, "read")
        hook.close()
    assert [a.seq for a in read_anchors(anchor_file)] == [1, 2]
    other = tmp_path / "foreign.jsonl"
    other.write_text(Anchor(2, b"\x01" * 32, b"\x02" * 64, keys.key_id, 1).line() + "\n")
    assert Anchorer(other).export(engine) == 2  # not this database's head: everything again
    assert [a.seq for a in read_anchors(other)] == [2, 1, 2]
