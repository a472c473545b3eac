"""Restriction and legal-hold labels are written through ``FhirStore.transact``, so the hook chain sees them.

Before, the relabel wrote versions beside the store's write path: no AuditEvent
for the new version and no CRM outbox decision.  Now the labelled version is
an ordinary change: the audit stage records it, and the CRM outbox stage
decides on the restricted Patient (both backends).
"""

from __future__ import annotations

import json

import httpx
from sqlalchemy import select

from audit.schema import audit_event
from consent.purposes import APPOINTMENT_REMINDER
from crm_bridge.schema import crm_outbox
from tests.crm_bridge.conftest import CRM_ID, CrmClient, counter_consent, full_patient
from tests.http.live import LiveServer
from tests.rights.conftest import create, erase, privacy


def _events(live: LiveServer) -> list[dict[str, object]]:
    live.runtime.audit.flush()
    with live.runtime.engine.connect() as conn:
        rows = conn.execute(select(audit_event.c.content).order_by(audit_event.c.seq)).all()
    return [json.loads(content) for (content,) in rows]


def _codes(event: dict[str, object]) -> list[str]:
    return [str(c["code"]) for c in event.get("subtype") or []]  # type: ignore[attr-defined]


def _change_events(live: LiveServer, reference: str) -> list[dict[str, object]]:
    """AuditEvents of the audit stage naming ``reference`` (a versioned resource) as changed."""
    return [e for e in _events(live) if "update" in _codes(e) and reference in json.dumps(e)]


def _patient(live: LiveServer, pid: str) -> dict[str, object]:
    record: dict[str, object] = httpx.get(
        f"{live.fhir_url}/Patient/{pid}", headers=live.headers, timeout=30
    ).json()
    return record


def test_restriction_label_is_audited_and_reaches_the_outbox(
    rights_live: LiveServer, rights_crm: CrmClient
) -> None:
    live = rights_live
    pid = create(live, full_patient())
    create(live, counter_consent(pid, APPOINTMENT_REMINDER))
    before = _patient(live, pid)["meta"]["versionId"]  # type: ignore[index]
    assert any(e["type"] == "patient.upserted" for e in rights_crm.feed())
    with (
        privacy(live, live.auth("patient", patient_id=pid)) as mine,
        privacy(live, live.auth("privacy_officer")) as officer,
    ):
        filed = mine.post("/requests", json={"type": "restriction", "reason": "tạm dừng xử lý"}).json()
        assert officer.post(f"/requests/{filed['id']}/process", json={}).status_code == 200
    record = _patient(live, pid)
    version = record["meta"]["versionId"]  # type: ignore[index]
    assert int(version) == int(before) + 1
    assert any(s["code"] == "R" for s in record["meta"]["security"])  # type: ignore[index]
    reference = f"Patient/{pid}/_history/{version}"
    # the audit stage recorded the labelled version, as a change made by the privacy workflow
    changed = _change_events(live, reference)
    assert len(changed) == 1
    # the workflow's own step names the same version
    labelled = [e for e in _events(live) if "privacy-restricted-labelled" in _codes(e)]
    assert len(labelled) == 1 and reference in json.dumps(labelled[0])
    # the CRM outbox stage saw a restricted Patient: processing for every purpose is suppressed
    last = rights_crm.feed()[-1]
    assert last["type"] == "consent.changed"
    assert last["data"]["suppress"] is True and last["data"]["withdrawn"] == [APPOINTMENT_REMINDER]


def test_erasure_hold_labels_are_audited_and_the_outbox_keeps_only_the_erasure(
    rights_live: LiveServer, rights_crm: CrmClient
) -> None:
    live = rights_live
    pid = create(live, full_patient())
    create(live, counter_consent(pid, APPOINTMENT_REMINDER))
    assert any(e["type"] == "patient.upserted" for e in rights_crm.feed())
    erase(live, pid)
    record = _patient(live, pid)
    assert {"code": "legal-hold"}.items() <= record["meta"]["tag"][0].items()  # type: ignore[index]
    reference = f"Patient/{pid}/_history/{record['meta']['versionId']}"  # type: ignore[index]
    assert len(_change_events(live, reference)) == 1
    held = [e for e in _events(live) if "privacy-hold-labelled" in _codes(e)]
    assert len(held) == 1 and reference in json.dumps(held[0])
    # whatever the outbox stage decided for the labelled Patient is purged by the erasure in the
    # same transaction: about this patient the CRM is only told to erase it
    with live.runtime.engine.connect() as conn:
        assert conn.execute(select(crm_outbox.c.seq).where(crm_outbox.c.patient_id == pid)).first() is None
        kinds = [
            str(r[0])
            for r in conn.execute(
                select(crm_outbox.c.event_type)
                .where(crm_outbox.c.crm_id == CRM_ID)
                .order_by(crm_outbox.c.seq)
            )
        ]
    assert kinds[-1] == "patient.erased"
