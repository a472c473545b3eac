"""CRM → HIS booking round trip against a real MLLP peer (asyncio server in the test), both backends."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from consent.purposes import APPOINTMENT_REMINDER, build_consent
from gateway.mllp.framing import Frame, FrameDecoder, frame
from tests.crm_bridge.conftest import CRM_ID, CrmClient, full_patient, his, recent, serve_crm, wait_for
from tests.http.live import LiveServer


class HisPeer:
    """An MLLP server answering every message with ``code`` (MSA-2 echoes MSH-10 unless ``wrong_id``)."""

    def __init__(
        self, code: str, text: str = "", wrong_id: bool = False, *, msa_text: str = "", err: str = ""
    ) -> None:
        """``msa_text``: MSA-3; ``err``: a whole ERR segment replacing the one built from ``text``."""
        self.code, self.text, self.wrong_id = code, text, wrong_id
        self.msa_text, self.err = msa_text, err
        self.messages: list[bytes] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        ready = threading.Event()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            decoder = FrameDecoder(1 << 20)
            while data := await reader.read(65536):
                for item in decoder.feed(data):
                    if not isinstance(item, Frame):
                        continue
                    self.messages.append(item.payload)
                    msh = item.payload.split(b"\r", 1)[0].decode().split("|")
                    control = "OTHER" if self.wrong_id else msh[9]
                    err = f"\rERR||||E||||{self.text}" if self.text else ""
                    err = f"\r{self.err}" if self.err else err
                    msa = f"MSA|{self.code}|{control}" + (f"|{self.msa_text}" if self.msa_text else "")
                    ack = f"MSH|^~\\&|HIS|HIS|CAREBRIDGE|CRM|20261120||ACK^S12|A{control}|P|2.5.1\r{msa}{err}"
                    writer.write(frame(ack.encode()))
                    await writer.drain()
            writer.close()

        async def main() -> None:
            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            async with server:
                with contextlib.suppress(asyncio.CancelledError):
                    await server.serve_forever()

        self.thread = threading.Thread(target=lambda: self.loop.run_until_complete(main()), daemon=True)
        self.thread.start()
        ready.wait(10)

    def close(self) -> None:
        for task in asyncio.all_tasks(self.loop):
            self.loop.call_soon_threadsafe(task.cancel)


@pytest.fixture(params=["AA", "AR"])
def booking_env(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Path
) -> Iterator[tuple[LiveServer, HisPeer]]:
    peer = HisPeer(request.param, "Bác sĩ không có lịch vào giờ này" if request.param == "AR" else "")
    with serve_crm(database_url, tmp_path, crm_his_mllp=f"127.0.0.1:{peer.port}") as live:
        yield live, peer
    peer.close()


def _consented_pseudonym(live: LiveServer, crm: CrmClient) -> tuple[str, str]:
    with his(live) as http:
        pid = http.post("/Patient", json=full_patient()).json()["id"]
        consent = build_consent(
            pid,
            APPOINTMENT_REMINDER,
            permit=True,
            date_time=recent(2),
            channel="zalo",
            text_version="v3",
            text_shown="Đồng ý",
            recipient=CRM_ID,
        )
        assert http.post("/Consent", json=consent).status_code == 201
    return pid, crm.feed()[-1]["subject"]


def test_booking_round_trip(booking_env: tuple[LiveServer, HisPeer]) -> None:
    live, peer = booking_env
    crm = CrmClient(live)
    _pid, pseudonym = _consented_pseudonym(live, crm)
    cursor = crm.feed()[-1]["seq"]
    body = {
        "subject": pseudonym,
        "slot": {"start": "2026-12-02T09:00:00+07:00", "end": "2026-12-02T09:30:00+07:00"},
        "service": {"code": "NIENG", "display": "Niềng răng - tái khám"},
    }
    response = crm.http.post("/appointments", json=body, headers={"Idempotency-Key": "req-1"})
    assert response.status_code == 202, response.text
    appointment_id = response.json()["appointment_id"]
    again = crm.http.post("/appointments", json=body, headers={"Idempotency-Key": "req-1"})
    assert again.json()["appointment_id"] == appointment_id  # idempotent
    booking = live.runtime.crm.booking
    booking.start()
    try:
        wait_for(lambda: bool(crm.feed(cursor)), 20)
    finally:
        booking.stop()
    sent = peer.messages[0].decode()
    assert sent.startswith("MSH|") and "SIU^S12" in sent and "BN" in sent  # the HIS gets the MRN
    assert pseudonym not in sent
    status = httpx.get(f"{live.fhir_url}/Appointment/{appointment_id}", headers=live.headers).json()["status"]
    events = crm.feed(cursor)
    if peer.code == "AA":
        assert status == "booked"
        assert [e["type"] for e in events] == ["appointment.booked"]
        assert events[0]["data"]["appointment"]["appointment_id"] == appointment_id
    else:
        assert status == "cancelled"
        assert [e["type"] for e in events] == ["appointment.rejected"]
        # the HIS's text ("Bác sĩ không có lịch vào giờ này") stays with the clinic: the CRM
        # gets a category and the HL7 error code only (issue #18 item 4)
        assert events[0]["data"] == {
            "appointment_id": appointment_id,
            "ack_code": "AR",
            "reason": {"category": "refused", "hl7_error_code": None},
        }
        assert "Bác sĩ" not in str(events)
    crm.http.close()


def test_ack_for_another_message_changes_nothing(database_url: str, tmp_path: Path) -> None:
    peer = HisPeer("AA", wrong_id=True)
    with serve_crm(database_url, tmp_path, crm_his_mllp=f"127.0.0.1:{peer.port}") as live:
        crm = CrmClient(live)
        _pid, pseudonym = _consented_pseudonym(live, crm)
        body = {
            "subject": pseudonym,
            "slot": {"start": "2026-12-02T09:00:00+07:00", "end": "2026-12-02T09:30:00+07:00"},
            "service": {"code": "X"},
        }
        appointment_id = crm.http.post("/appointments", json=body).json()["appointment_id"]
        live.runtime.crm.booking.run_once()
        status = httpx.get(f"{live.fhir_url}/Appointment/{appointment_id}", headers=live.headers).json()[
            "status"
        ]
        assert status == "proposed" and len(peer.messages) == 1
        assert crm.http.post("/appointments", json={**body, "subject": "k1.unknown"}).status_code == 404
        crm.http.close()
    peer.close()
