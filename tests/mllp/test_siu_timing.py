"""A v2.5.1 SIU^S12 with its time only in TQ1, over real MLLP into the store (SQLite and PostgreSQL).

The CRM reminder is computed from the stored Appointment.start, so this is checked
end to end: TCP, journal, mapping, store, read back.
"""

from __future__ import annotations

from sqlalchemy import select

from common.identifiers import filler_appointment_system
from fhir_store.schema import hl7_journal
from gateway.mllp.client import MllpClient, parse_ack
from tests.mappers.test_siu_timing import END, GROUP, START, TQ1_ONLY, siu
from tests.mllp.conftest import RunningServer


def test_tq1_only_appointment_is_stored_with_its_time(mllp: RunningServer) -> None:
    with MllpClient("127.0.0.1", mllp.port) as client:
        ack = client.exchange(siu(sch11="^^^20201001^20201009", tq1=TQ1_ONLY, group=GROUP))
    assert ack is not None and (ack.code, ack.text) == ("AA", "")
    stored = mllp.owner("Appointment", filler_appointment_system("BVDK_HN"), "LH21092401")
    assert stored is not None
    assert (stored["status"], stored["start"], stored["end"]) == ("booked", START, END)
    kinds = [p["actor"].get("type") for p in stored["participant"]]
    assert kinds == ["Patient", "Practitioner", "Location", None]  # AIP, AIL, then the AIG machine


def test_untimed_booking_gets_ae_and_nothing_is_stored(mllp: RunningServer) -> None:
    with MllpClient("127.0.0.1", mllp.port) as client:
        answer = client.request(siu(group=GROUP))
    assert answer is not None
    ack = parse_ack(answer)
    assert ack.code == "AE" and "TQ1-7" in ack.text
    assert b"\rERR||TQ1^1^7|101^" in answer
    assert mllp.owner("Appointment", filler_appointment_system("BVDK_HN"), "LH21092401") is None
    with mllp.runtime.engine.connect() as conn:
        statuses = conn.execute(select(hl7_journal.c.status)).scalars().all()
    assert statuses == ["failed"]
