"""INFO lines an operator can use (issue #19 item 3): webhook failures, HIS unreachable, bookings rejected.

Ids, attempt counts and codes only: never the patient, the event body or the HIS's free text.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path

import pytest

from consent.purposes import APPOINTMENT_REMINDER
from tests.crm_bridge.conftest import CrmClient, Receiver, full_patient, his, serve_crm
from tests.crm_bridge.test_booking import HisPeer, _consented_pseudonym
from tests.crm_bridge.test_flow import _consent, _create, _subscribe
from tests.http.live import LiveServer

BODY = {
    "slot": {"start": "2026-12-02T09:00:00+07:00", "end": "2026-12-02T09:30:00+07:00"},
    "service": {"code": "X"},
}


def _lines(caplog: pytest.LogCaptureFixture, start: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.INFO and r.getMessage().startswith(start)
    ]


def test_each_failed_webhook_delivery_is_one_info_line(
    crm_live: LiveServer, crm: CrmClient, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    _subscribe(crm, receiver)
    dispatcher = crm_live.runtime.crm.dispatcher
    dispatcher.settings = dispatcher.settings.__class__(
        **{**dispatcher.settings.__dict__, "webhook_max_attempts": 5, "webhook_backoff_base_s": 0.0}
    )
    receiver.status = 500
    with his(crm_live) as http:
        pid = _create(http, full_patient())
        _consent(http, pid, APPOINTMENT_REMINDER)
    caplog.set_level(logging.INFO, logger="carebridge.crm.delivery")
    dispatcher.run_once()
    dispatcher.run_once()
    lines = _lines(caplog, "webhook delivery failed")
    assert len(lines) == 2 and "attempt=1 " in lines[0] and "attempt=2 " in lines[1]
    assert all("crm=" in line and "seq=" in line and pid not in line for line in lines)


@pytest.mark.parametrize("backend", ["sqlite"])  # log lines; storage is covered by test_booking
def test_a_booking_the_his_rejects_is_logged(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="carebridge.crm.booking")
    peer = HisPeer("AR", "Bác sĩ không có lịch vào giờ này")
    with serve_crm(database_url, tmp_path, crm_his_mllp=f"127.0.0.1:{peer.port}") as live:
        crm = CrmClient(live)
        _pid, pseudonym = _consented_pseudonym(live, crm)
        appointment_id = crm.http.post("/appointments", json={**BODY, "subject": pseudonym}).json()[
            "appointment_id"
        ]
        live.runtime.crm.booking.run_once()
        crm.http.close()
    peer.close()
    (rejected,) = _lines(caplog, "his booking rejected")
    assert f"appointment={appointment_id}" in rejected and "ack=AR" in rejected and "Bác sĩ" not in rejected


@pytest.mark.parametrize("backend", ["sqlite"])
def test_an_unreachable_his_is_logged(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="carebridge.crm.booking")
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with serve_crm(database_url, tmp_path, crm_his_mllp=f"127.0.0.1:{port}") as live:
        crm = CrmClient(live)
        _pid, pseudonym = _consented_pseudonym(live, crm)
        crm.http.post("/appointments", json={**BODY, "subject": pseudonym})
        live.runtime.crm.booking.run_once()
        crm.http.close()
    (unreachable,) = _lines(caplog, "his unreachable")
    assert "attempt=1 " in unreachable and "error=ConnectionRefusedError" in unreachable
