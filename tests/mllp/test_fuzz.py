"""Property tests: arbitrary bytes, framed or not, never crash the listener or poison a connection."""

from __future__ import annotations

import itertools
from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.mllp.client import MllpClient, parse_ack
from gateway.mllp.framing import frame
from tests.mllp.conftest import RunningServer, a04

_counter = itertools.count()

hl7ish = st.one_of(
    st.binary(max_size=300),
    st.text(alphabet="MSHPIDEVN|^~\\&\r\n\x0b\x1c 0123456789Ạệ", max_size=300).map(str.encode),
    st.builds(
        lambda tail: b"MSH|^~\\&|" + tail,
        st.binary(max_size=200),
    ),
)


def _answer_for(client: MllpClient, control_id: str) -> str:
    """Read answers (the garbage may earn ARs first) until the one for ``control_id``."""
    for _ in range(50):
        raw = client.read_frame(20)
        assert raw is not None, "listener stopped answering"
        ack = parse_ack(raw)
        if ack.control_id == control_id:
            return ack.code
    raise AssertionError("no answer for the valid message")


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=hl7ish, framed=st.booleans(), close_after=st.booleans())
def test_arbitrary_bytes_never_crash_the_listener(
    start_server: Callable[..., RunningServer], data: bytes, framed: bool, close_after: bool
) -> None:
    mllp = _server(start_server)
    payload = frame(data) if framed else data
    control_id = f"FZ{next(_counter)}"
    with MllpClient("127.0.0.1", mllp.port, timeout=20) as client:
        client.send_raw(payload)
        if close_after:
            client.sock.close()
        else:
            client.send(a04(control_id, f"FZ-{control_id}"))  # same connection: still works
            assert _answer_for(client, control_id) == "AA"
    with MllpClient("127.0.0.1", mllp.port, timeout=20) as fresh:
        fresh_id = control_id + "F"
        fresh.send(a04(fresh_id, f"FZ-{fresh_id}"))
        assert _answer_for(fresh, fresh_id) == "AA"


_servers: dict[int, RunningServer] = {}


def _server(start_server: Callable[..., RunningServer]) -> RunningServer:
    """One listener per test run (per backend), reused across hypothesis examples."""
    key = id(start_server)
    if key not in _servers:
        _servers.clear()
        _servers[key] = start_server(mllp_max_message_bytes=4096)
    return _servers[key]
