"""Caps on MLLP connections (issue #17 item 4): excess connections are closed at once, the rest serve.

In process (both backends): caps of 6 in total and 4 per peer address, peers on
127.0.0.1, 127.0.0.2 and 127.0.0.3 (Linux routes all of 127/8 to loopback).
As a real process: ``carebridge serve`` under ``RLIMIT_NOFILE`` 256 lowers caps that
do not fit, says so at start, closes the excess of 300 idle connections, and keeps
``/healthz`` and MLLP answering without a flood of log lines.
"""

from __future__ import annotations

import resource
import socket
import time
import urllib.request
from collections.abc import Callable

import pytest

from common import MllpSettings
from gateway.mllp.client import MllpClient, parse_ack
from gateway.mllp.framing import frame
from gateway.mllp.limits import ConnectionGate, ConnectionLimits, connection_limits
from tests.mllp.conftest import RunningServer, ServeProcess, a04


def connect(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    return sock


def closed_by_server(sock: socket.socket) -> bool:
    """True when the server closed this connection (EOF or reset) before sending anything."""
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def ack_code(sock: socket.socket, control_id: str, mrn: str) -> str:
    sock.sendall(frame(a04(control_id, mrn)))
    sock.settimeout(30)
    data = b""
    while b"\x1c" not in data:
        chunk = sock.recv(65536)
        assert chunk, "connection closed before the ACK"
        data += chunk
    return parse_ack(data[data.index(b"\x0b") + 1 : data.index(b"\x1c")]).code


def test_excess_connections_are_closed_and_capacity_comes_back(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server(mllp_max_connections=6, mllp_max_connections_per_peer=4)

    def gate_open() -> int:
        return server.server.connection_count

    first = [connect(server.port, "127.0.0.1") for _ in range(4)]
    wait_until(lambda: gate_open() == 4, "4 connections from 127.0.0.1")
    over_peer = connect(server.port, "127.0.0.1")
    assert closed_by_server(over_peer)
    second = [connect(server.port, "127.0.0.2") for _ in range(2)]
    wait_until(lambda: gate_open() == 6, "6 connections")
    over_total = connect(server.port, "127.0.0.3")
    assert closed_by_server(over_total)
    assert server.server.ingestor.metrics.connections_refused_snapshot() == {"per-peer": 1, "total": 1}
    # the admitted connections still serve
    assert ack_code(first[0], "CAP00001", "BN-CAP-1") == "AA"
    assert ack_code(second[1], "CAP00002", "BN-CAP-2") == "AA"
    # one closes: a new connection from the same peer is accepted and served
    first[1].close()
    wait_until(lambda: gate_open() == 5, "the closed connection to be released")
    again = connect(server.port, "127.0.0.1")
    assert ack_code(again, "CAP00003", "BN-CAP-3") == "AA"
    for sock in [*first, *second, over_peer, over_total, again]:
        sock.close()
    wait_until(lambda: gate_open() == 0, "every connection to be released")


def test_caps_are_lowered_to_fit_the_open_file_limit() -> None:
    settings = MllpSettings(max_connections=256, max_connections_per_peer=32)
    assert connection_limits(settings, None).total == 256  # unlimited: as configured
    assert connection_limits(settings, 20000) == ConnectionLimits(256, 32, 20000)
    low = connection_limits(settings, 256)
    assert (low.total, low.per_peer) == (64, 32)  # 256 - 128 reserved - 64 accepted in one burst
    assert low.clamped == ("CAREBRIDGE_MLLP_MAX_CONNECTIONS",)
    tiny = connection_limits(MllpSettings(max_connections=50, max_connections_per_peer=50), 150)
    assert (tiny.total, tiny.per_peer) == (1, 1)
    assert tiny.clamped == ("CAREBRIDGE_MLLP_MAX_CONNECTIONS", "CAREBRIDGE_MLLP_MAX_CONNECTIONS_PER_PEER")


def test_gate_counts_per_peer_and_total() -> None:
    gate = ConnectionGate(
        connection_limits(MllpSettings(max_connections=3, max_connections_per_peer=2), None)
    )
    assert [gate.admit("a"), gate.admit("a"), gate.admit("a")] == [None, None, "per-peer"]
    assert [gate.admit("b"), gate.admit("c")] == [None, "total"]
    gate.release("a")
    assert gate.admit("c") is None and gate.open == 3


def _low_file_limit() -> None:  # runs in the child before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_serve_under_a_low_file_limit_survives_idle_connections(
    serve: Callable[..., ServeProcess], tmp_path_factory: pytest.TempPathFactory
) -> None:
    database_url = f"sqlite:///{tmp_path_factory.mktemp('fdlimit') / 'carebridge.db'}"
    http_port = _free_port()
    process = serve(
        database_url,
        {"CAREBRIDGE_MLLP_MAX_CONNECTIONS_PER_PEER": "1000", "CAREBRIDGE_MLLP_IDLE_TIMEOUT_S": "600"},
        http_port=http_port,
        preexec_fn=_low_file_limit,
    )
    events = process.log_events()
    limits = [e for e in events if e.get("event") == "open file limit"]
    assert limits and limits[0]["open_files_soft"] == 256
    assert (limits[0]["mllp_max_connections"], limits[0]["mllp_max_connections_per_peer"]) == (64, 64)
    assert any(str(e.get("event", "")).startswith("open file limit too low") for e in events)
    idle = [connect(process.port, "127.0.0.1") for _ in range(300)]
    try:
        refused = sum(1 for sock in idle[200:] if closed_by_server(sock))
        assert refused == 100  # everything past the cap is closed at once
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=10) as response:
            assert response.status == 200
        for sock in idle[:100]:
            sock.close()
        with MllpClient("127.0.0.1", process.port, timeout=30) as client:
            answer = client.request(a04("FD000001", "BN-FD-1"))
        assert answer is not None and parse_ack(answer).code == "AA"
    finally:
        for sock in idle:
            sock.close()
    events = process.log_events()
    refusals = [e for e in events if str(e.get("event", "")).startswith("mllp connection refused")]
    assert 1 <= len(refusals) <= 3  # collapsed, not one line per connection
    assert not any("out of system resource" in str(e.get("event", "")) for e in events)
