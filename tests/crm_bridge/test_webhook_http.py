"""The dispatcher's HTTP client against real loopback receivers: keep-alive, stale connections, errors."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from crm_bridge.webhook_http import WebhookClient, WebhookError
from crm_bridge.webhook_policy import WebhookPolicy, parse_networks

# these receivers listen on loopback over plain http: allowed explicitly
LOOPBACK = WebhookPolicy(allow_http=True, allowed_networks=parse_networks("127.0.0.0/8"))


class _Receiver:
    """Counts TCP connections and requests; ``close_after_each`` drops idle connections silently."""

    def __init__(self, *, status: int = 204, close_after_each: bool = False) -> None:
        self.connections = 0
        self.bodies: list[bytes] = []
        self.paths: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                outer.connections += 1
                super().setup()

            def do_POST(self) -> None:
                outer.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                outer.paths.append(self.path)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()  # keep-alive is announced: the client will try to reuse it
                if close_after_each:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # gone without a word
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # shutdown() waits up to one poll interval: 0.5 s by default
        threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?crm=a"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    r = _Receiver()
    yield r
    r.close()


def test_posts_reuse_one_connection(receiver: _Receiver) -> None:
    client = WebhookClient(5.0, LOOPBACK)
    statuses = [client.post(receiver.url, f"{i}".encode(), {"X-N": str(i)}) for i in range(5)]
    client.close()
    assert statuses == [204] * 5
    assert receiver.bodies == [b"0", b"1", b"2", b"3", b"4"]
    assert receiver.paths == ["/hook?crm=a"] * 5
    assert receiver.connections == 1


def test_connection_closed_by_the_receiver_is_replaced() -> None:
    receiver = _Receiver(close_after_each=True)
    try:
        client = WebhookClient(5.0, LOOPBACK)
        statuses = [client.post(receiver.url, b"x", {}) for _ in range(3)]
        client.close()
    finally:
        receiver.close()
    assert statuses == [204, 204, 204]
    assert len(receiver.bodies) == 3  # each event reached the receiver exactly once
    assert receiver.connections == 3


def test_error_status_is_returned_not_raised() -> None:
    receiver = _Receiver(status=503)
    try:
        assert WebhookClient(5.0, LOOPBACK).post(receiver.url, b"x", {}) == 503
    finally:
        receiver.close()


def test_refused_connection_and_bad_urls_raise() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nobody listens once closed
    client = WebhookClient(2.0, LOOPBACK)
    with pytest.raises(WebhookError, match="ConnectionRefusedError"):
        client.post(f"http://127.0.0.1:{port}/hook", b"x", {})
    for url in ("ftp://127.0.0.1/hook", "http:///nohost"):
        with pytest.raises(WebhookError, match="unsupported"):
            client.post(url, b"x", {})
