"""A NUL in the header's text fields is journaled on both backends and poisons nothing.

PostgreSQL ``text`` cannot hold U+0000 (SQLite can): the journal's describing columns
store it replaced by U+FFFD, the sealed raw bytes keep the message as sent.  Before,
the refused insert raised, and a valid message that shared the writer lane's group
with it was answered AE as well.
"""

from __future__ import annotations

from sqlalchemy import select

from common import mrn_system
from fhir_store.schema import hl7_journal
from gateway.mllp.client import MllpClient, parse_ack
from gateway.mllp.framing import frame
from tests.mllp.conftest import RunningServer, a04


def test_nul_in_the_sender_is_journaled_and_the_next_message_is_applied(mllp: RunningServer) -> None:
    with MllpClient("127.0.0.1", mllp.port, timeout=20) as client:
        # pipelined on one connection, so both usually wait in the same lane together
        client.send_raw(frame(a04("NUL0001", "BN-NUL-1", app="HIS\x00VN")) + frame(a04("OK0001", "BN-NUL-2")))
        answers = {}
        for _ in range(2):
            raw = client.read_frame(20)
            assert raw is not None
            ack = parse_ack(raw)
            answers[ack.control_id] = ack.code
    assert answers["OK0001"] == "AA"
    assert answers["NUL0001"] in ("AA", "AE", "AR")
    j = hl7_journal
    with mllp.runtime.engine.connect() as conn:
        rows = conn.execute(select(j.c.sending_application, j.c.control_id, j.c.status)).all()
    by_id = {str(r[1]): (str(r[0]), str(r[2])) for r in rows}
    assert by_id["NUL0001"][0] == "HIS\ufffdVN"
    assert by_id["OK0001"] == ("HIS_VN", "processed")
    assert mllp.owner("Patient", mrn_system("BVDK_HN"), "BN-NUL-2") is not None
