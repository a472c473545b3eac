"""Issue #15 item 2: 30 messages in shuffled arrival orders end as in-order delivery does.

A clinic day (``tests.support.hl7_events.clinic_day``: registrations, admissions,
transfers, discharges and their cancels, demographic updates, appointments
booked, moved, cancelled and missed, and an A40 merge) is sent once in the
order its events happened, over one connection, and then in three shuffled
orders over three concurrent MLLP connections each.  Every run uses its own
assigning authority, so the runs share one database and one listener.  Each run
ends with the same Patients, Encounters and Appointments, and every message got AA.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest

from gateway.mllp.client import MllpClient
from tests.mllp.conftest import RunningServer
from tests.support.hl7_events import clinic_day
from tests.support.snapshots import resources_of

SEEDS = (11, 23, 47)
CONNECTIONS = 3


def send(port: int, messages: list[bytes], codes: list[str]) -> None:
    with MllpClient("127.0.0.1", port) as client:
        for raw in messages:
            ack = client.exchange(raw)
            codes.append("none" if ack is None else ack.code)


def deliver(port: int, messages: list[bytes]) -> list[str]:
    """Send ``messages`` round-robin over :data:`CONNECTIONS` concurrent connections."""
    codes: list[str] = []
    shares = [messages[i::CONNECTIONS] for i in range(CONNECTIONS)]
    threads = [threading.Thread(target=send, args=(port, share, codes)) for share in shares]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    return codes


@pytest.mark.slow
def test_shuffled_arrival_orders_end_as_in_order_delivery(
    start_server: Callable[..., RunningServer],
) -> None:
    server = start_server()
    in_order = clinic_day("BVO")
    codes: list[str] = []
    send(server.port, in_order, codes)
    assert codes == ["AA"] * 30
    expected = resources_of(server.runtime.store, "BVO")
    assert len(expected) == 6 + 6 + 2  # six patients (one merged), six visits, two bookings
    assert expected["Encounter:https://id.carebridge.vn/visit/AUTH|VAUTH4"]["status"] == "in-progress"

    for seed in SEEDS:
        auth = f"BVS{seed}"
        messages = clinic_day(auth)
        random.Random(seed).shuffle(messages)
        assert messages != clinic_day(auth)
        codes = deliver(server.port, messages)
        assert sorted(codes) == ["AA"] * 30, seed
        assert resources_of(server.runtime.store, auth) == expected, seed
