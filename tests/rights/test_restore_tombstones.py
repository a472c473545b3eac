"""A restore of an older backup re-applies the erasure tombstones kept outside the database (both backends)."""

from __future__ import annotations

from pathlib import Path

import httpx
from sqlalchemy import select

from common.settings import Settings
from consent.pdp import load_consents
from consent.purposes import APPOINTMENT_REMINDER
from consent.rights.schema import privacy_tombstone
from consent.rights.tombstones import append_to_file, subject_hashes
from crm_bridge.schema import crm_pseudonym
from gateway.backup import reapply_tombstones
from tests.crm_bridge.conftest import CrmClient, counter_consent, full_patient
from tests.http.live import LiveServer
from tests.rights.conftest import create


def test_reapply_after_restore(rights_live: LiveServer, rights_crm: CrmClient, tmp_path: Path) -> None:
    pid = create(rights_live, full_patient())
    create(rights_live, counter_consent(pid, APPOINTMENT_REMINDER))
    assert rights_crm.feed(), "the CRM received the patient (the state an old backup holds)"
    patient = httpx.get(f"{rights_live.fhir_url}/Patient/{pid}", headers=rights_live.headers).json()
    # the erasure happened after the backup: only the file outside the database knows it
    file = tmp_path / "outside" / "tombstones.jsonl"
    append_to_file(
        file,
        [
            {
                "request_id": "req-after-backup",
                "subject_hash": h,
                "kind": kind,
                "erased_us": 1,
                "scope": "{}",
                "legal_basis": "Law 91/2025/QH15 Art. 14",
            }
            for h, kind in subject_hashes(patient, rights_live.runtime.store.cipher)
        ],
    )
    tombstones = Settings.from_env({"CAREBRIDGE_PRIVACY_TOMBSTONE_FILE": str(file)}).privacy.tombstone_path
    engine = rights_live.runtime.engine
    cipher = rights_live.runtime.store.cipher
    assert reapply_tombstones(engine, cipher, tombstones) == 1
    assert reapply_tombstones(engine, cipher, tombstones) == 0  # idempotent
    with engine.connect() as conn:
        assert conn.execute(select(crm_pseudonym).where(crm_pseudonym.c.patient_id == pid)).first() is None
        assert {c.status for c in load_consents(conn, pid, cipher)} == {"inactive"}
        rows = conn.execute(select(privacy_tombstone.c.request_id)).all()
    assert {r[0] for r in rows} == {"req-after-backup"}
    after = httpx.get(f"{rights_live.fhir_url}/Patient/{pid}", headers=rights_live.headers).json()
    assert any(s["code"] == "R" for s in after["meta"]["security"])
    assert pid not in file.read_text()
