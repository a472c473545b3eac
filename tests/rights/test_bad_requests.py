"""Bad requests get a clear OperationOutcome and change nothing (both backends, real HTTP and tokens)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from consent.rights.schema import privacy_request
from fhir_store.schema import resource_current
from tests.crm_bridge.conftest import full_patient
from tests.http.live import LiveServer
from tests.rights.conftest import create, privacy


def _counts(live: LiveServer) -> tuple[int, int]:
    with live.runtime.engine.connect() as conn:
        requests = conn.execute(select(func.count()).select_from(privacy_request)).scalar_one()
        tasks = conn.execute(
            select(func.count()).select_from(resource_current).where(resource_current.c.res_type == "Task")
        ).scalar_one()
    return int(requests), int(tasks)


def _issue(response: object) -> str:
    body = response.json()  # type: ignore[attr-defined]
    assert body["resourceType"] == "OperationOutcome"
    return str(body["issue"][0]["diagnostics"])


@pytest.mark.slow
def test_bad_requests_are_refused_and_change_nothing(rights_live: LiveServer) -> None:
    mine = create(rights_live, full_patient())
    other = create(rights_live, full_patient())
    with privacy(rights_live, rights_live.auth("patient", patient_id=mine)) as http:
        unknown = http.post("/requests", json={"type": "forget-me", "reason": "tôi muốn xoá dữ liệu"})
        assert unknown.status_code == 400 and "unknown request type" in _issue(unknown)
        foreign = http.post(
            "/requests", json={"type": "erasure", "patient": f"Patient/{other}", "reason": "xoá dữ liệu"}
        )
        assert foreign.status_code == 403 and "own record" in _issue(foreign)
        no_reason = http.post("/requests", json={"type": "access"})
        assert no_reason.status_code == 400 and "reason" in _issue(no_reason)
        assert _counts(rights_live) == (0, 0)

        first = http.post("/requests", json={"type": "erasure", "reason": "không dùng dịch vụ nữa"})
        assert first.status_code == 201, first.text
        assert _counts(rights_live) == (1, 1)
        duplicate = http.post("/requests", json={"type": "erasure", "reason": "nhắc lại yêu cầu"})
        assert duplicate.status_code == 409 and first.json()["id"] in _issue(duplicate)
        assert _counts(rights_live) == (1, 1)
        # a patient cannot manage requests nor see another patient's
        ack = http.post(f"/requests/{first.json()['id']}/acknowledge")
        assert ack.status_code == 403
    with privacy(rights_live, rights_live.auth("patient", patient_id=other)) as http:
        assert http.get(f"/requests/{first.json()['id']}").status_code == 404
        assert http.get("/requests").json()["total"] == 0
    # a clinician has no access to the privacy API at all
    with privacy(rights_live, rights_live.auth("clinician")) as http:
        assert http.get("/requests").status_code == 403
    # staff must record the identity verification
    with privacy(rights_live, rights_live.auth("privacy_officer")) as http:
        staff = http.post(
            "/requests", json={"type": "access", "patient": other, "reason": "bệnh nhân yêu cầu"}
        )
        assert staff.status_code == 400 and "identity" in _issue(staff)
    assert _counts(rights_live) == (1, 1)
