"""Every shared sample over real TCP: AA for the good ones with the expected FHIR content, AE/AR for bad_*."""

from __future__ import annotations

from sqlalchemy import select

from common.identifiers import (
    BHYT_SYSTEM,
    CCCD_SYSTEM,
    filler_appointment_system,
    mrn_system,
    visit_system,
)
from fhir_store import journal
from fhir_store.schema import hl7_journal
from gateway.mllp.client import MllpClient, parse_ack
from tests.mllp.conftest import BAD, FIXTURES, GOOD_ORDER, RunningServer, sample


def test_good_samples_get_aa_and_land_in_the_store(mllp: RunningServer) -> None:
    with MllpClient("127.0.0.1", mllp.port) as client:
        for name in GOOD_ORDER:
            ack = client.exchange(sample(name))
            assert ack is not None, name
            assert (ack.code, ack.text) == ("AA", ""), name

    an = mllp.owner("Patient", mrn_system("BVDK_HN"), "BN000123")
    assert an is not None
    assert an["name"][0]["text"] == "Nguyễn Văn An"
    assert an["name"][0]["family"] == "Nguyễn" and an["name"][0]["given"] == ["Văn", "An"]
    systems = {i["system"]: i["value"] for i in an["identifier"]}
    assert systems[CCCD_SYSTEM] == "079085001234" and systems[BHYT_SYSTEM] == "DN4797912345678"
    assert {"system": "phone", "value": "+84977888999"}.items() <= an["telecom"][0].items()
    merged = mllp.owner("Patient", mrn_system("BVDK_HN"), "BN000999")
    assert merged is not None and merged["active"] is False
    assert merged["link"] == [{"other": {"reference": f"Patient/{an['id']}"}, "type": "replaced-by"}]
    assert {"other": {"reference": f"Patient/{merged['id']}"}, "type": "replaces"} in an["link"]

    visit = mllp.owner("Encounter", visit_system("BVDK_HN"), "V2026112000001")
    assert visit is not None and visit["status"] == "finished" and "end" in visit["period"]

    latin1 = mllp.owner("Patient", mrn_system("PK_CU"), "000777")
    assert latin1 is not None and latin1["name"][0]["text"] == "Lê Hà"

    cancelled = mllp.owner("Appointment", filler_appointment_system("NK_SMILE_Q1"), "LH000501")
    noshow = mllp.owner("Appointment", filler_appointment_system("NK_SMILE_Q1"), "LH000777")
    assert cancelled is not None and cancelled["status"] == "cancelled"
    assert noshow is not None and noshow["status"] == "noshow"
    assert cancelled["meta"]["versionId"] == "3"  # S12 booked, S13 rescheduled, S15 cancelled

    with mllp.runtime.engine.connect() as conn:
        statuses = conn.execute(select(hl7_journal.c.status)).scalars().all()
    assert statuses == ["processed"] * len(GOOD_ORDER)


def test_bad_samples_get_ae_or_ar_with_err_text_and_are_journaled(mllp: RunningServer) -> None:
    expected = {
        "bad_invalid_birthdate": ("AE", "HIS009002", "date"),
        "bad_missing_patient_id": ("AE", "HIS009001", "PID-3"),
        "bad_no_msh": ("AR", "", "MSH"),
        "bad_unsupported_trigger": ("AR", "HIS009003", "ORU"),
    }
    with MllpClient("127.0.0.1", mllp.port) as client:
        for name in BAD:
            answer = client.request(sample(name))
            assert answer is not None
            ack = parse_ack(answer)
            code, control_id, word = expected[name]
            assert (ack.code, ack.control_id) == (code, control_id), name
            assert word in ack.text, (name, ack.text)
            assert b"\rERR|" in answer
    with mllp.runtime.engine.connect() as conn:
        rows = conn.execute(
            select(hl7_journal.c.id, hl7_journal.c.status, hl7_journal.c.ack_code, hl7_journal.c.error)
        ).all()
        acks = conn.execute(select(hl7_journal.c.ack)).scalars().all()
    # issue #18 item 5: the journal's error and stored ACK name the field and rule, not the birth date
    assert all("19851345" not in (r[3] or "") for r in rows)
    assert all(b"19851345" not in (bytes(a) if a else b"") for a in acks)
    entries = [journal.load(mllp.runtime.engine, r[0], mllp.runtime.store.cipher) for r in rows]
    assert [e.raw if e else None for e in entries] == [sample(n) for n in BAD]  # opened: sealed at rest
    assert [r[1] for r in rows] == ["failed", "failed", "rejected", "rejected"]
    assert [r[2] for r in rows] == ["AE", "AE", "AR", "AR"]
    assert all(r[3] for r in rows)


def test_python_hl7_mllp_client_gets_acks(mllp: RunningServer) -> None:
    """An independent client: python-hl7's MLLPClient (and its parser for the ACK)."""
    import hl7
    from hl7.client import MLLPClient

    with MLLPClient("127.0.0.1", mllp.port) as client:
        good = hl7.parse(client.send_message(sample("adt_a04_register_outpatient")).strip(b"\x0b\x1c\r"))
        bad = hl7.parse(client.send_message(sample("bad_missing_patient_id")).strip(b"\x0b\x1c\r"))
        text = "MSH|^~\\&|PY|HL7|X|Y|20260101||ADT^A04|PY1|P|2.3\rPID|1||PY-1^^^HL7^MR||Trần^Bảo\r"
        unicode_reply = hl7.parse(client.send_message(text).strip(b"\x0b\x1c\r").decode())
    assert str(good.segment("MSA")[1]) == "AA" and str(good.segment("MSA")[2]) == "HIS000001"
    assert str(good.segment("MSH")[9]) == "ACK^A04^ACK"
    assert str(bad.segment("MSA")[1]) == "AE" and str(bad.segment("ERR")[3][0][0]) == "101"
    assert str(unicode_reply.segment("MSA")[1]) == "AA"


def test_sample_folder_in_file_name_order_leaves_the_visit_finished(mllp: RunningServer) -> None:
    """Issue #15 item 2: the A03 (10:15) sorts before the A04 (08:30) of the same visit."""
    names = sorted(p.stem for p in FIXTURES.glob("*.hl7"))
    assert names.index("adt_a03_discharge_service_completed") < names.index("adt_a04_register_outpatient")
    with MllpClient("127.0.0.1", mllp.port) as client:
        acks = {name: client.exchange(sample(name)) for name in names}
    assert acks["adt_a04_register_outpatient"] is not None
    assert acks["adt_a04_register_outpatient"].code == "AA"  # the sender did nothing wrong

    visit = mllp.owner("Encounter", visit_system("BVDK_HN"), "V2026112000001")
    assert visit is not None and visit["status"] == "finished"
    assert visit["period"]["end"].startswith("2026-11-20T10:15")
    an = mllp.owner("Patient", mrn_system("BVDK_HN"), "BN000123")
    assert an is not None  # the A08 of 22/11 is the newest demographic picture
    assert {"system": "phone", "value": "+84977888999"}.items() <= an["telecom"][0].items()

    with mllp.runtime.engine.connect() as conn:
        rows = conn.execute(select(hl7_journal.c.control_id, hl7_journal.c.status, hl7_journal.c.error)).all()
    by_control = {r.control_id: (r.status, r.error) for r in rows}
    status, note = by_control["HIS000001"]  # the A04
    assert status == "stale"
    assert note is not None and f"Encounter/{visit['id']}" in note and "2026-11-20T03:15:00" in note
    assert by_control["HIS000004"][0] == "processed"  # the A03
