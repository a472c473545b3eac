"""A record under legal hold cannot be deleted (Circular 33/2025/TT-BYT retention), on any REST path.

Both backends, real HTTP, real tokens: the patient files an erasure the way a
patient does, a privacy officer processes it (the record goes under legal hold),
then the HIS tries REST DELETE, conditional DELETE and a transaction Bundle
DELETE: each is refused with a 409 OperationOutcome naming the rule, and the
record is still readable.  A patient who is not held is deleted as before.
"""

from __future__ import annotations

from typing import Any

import httpx

from tests.crm_bridge.conftest import MRN_SYSTEM, encounter, full_patient
from tests.http.live import LiveServer
from tests.rights.conftest import create, erase


def _fhir(live: LiveServer) -> httpx.Client:
    return httpx.Client(
        base_url=live.fhir_url,
        headers={**live.headers, "Content-Type": "application/fhir+json"},
        timeout=30,
    )


def _tags(record: dict[str, Any]) -> list[str]:
    return [str(t.get("code")) for t in record.get("meta", {}).get("tag") or []]


def _assert_refused(response: httpx.Response, reference: str) -> None:
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert issue["severity"] == "error" and issue["code"] == "business-rule"
    assert reference in issue["diagnostics"]
    assert "legal hold" in issue["diagnostics"] and "Circular 33/2025/TT-BYT" in issue["diagnostics"]


def test_a_held_patient_is_not_deleted_and_stays_readable(rights_live: LiveServer) -> None:
    live = rights_live
    patient = full_patient()
    mrn = patient["identifier"][0]["value"]
    pid = create(live, patient)
    eid = create(live, encounter(pid))
    erase(live, pid)
    with _fhir(live) as his:
        before = his.get(f"/Patient/{pid}").json()
        assert "legal-hold" in _tags(before)

        _assert_refused(his.delete(f"/Patient/{pid}"), f"Patient/{pid}")
        _assert_refused(
            his.delete("/Patient", params={"identifier": f"{MRN_SYSTEM}|{mrn}"}), f"Patient/{pid}"
        )
        _assert_refused(his.delete(f"/Encounter/{eid}"), f"Encounter/{eid}")
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "DELETE", "url": f"Patient/{pid}"}}],
        }
        _assert_refused(his.post("", json=bundle), f"Patient/{pid}")

        # nothing was deleted: same version, still readable, still held
        after = his.get(f"/Patient/{pid}")
        assert after.status_code == 200, after.text
        assert after.json()["meta"]["versionId"] == before["meta"]["versionId"]
        assert "legal-hold" in _tags(after.json())
        assert his.get(f"/Encounter/{eid}").status_code == 200


def test_an_update_dropping_the_hold_tag_does_not_make_the_record_deletable(rights_live: LiveServer) -> None:
    live = rights_live
    pid = create(live, full_patient())
    erase(live, pid)
    with _fhir(live) as his:
        record = his.get(f"/Patient/{pid}").json()
        record["meta"] = {"security": record["meta"]["security"]}  # keeps R, drops the legal-hold tag
        record["gender"] = "female"
        assert his.put(f"/Patient/{pid}", json=record).status_code == 200
        relabelled = his.get(f"/Patient/{pid}").json()
        assert relabelled["gender"] == "female" and "legal-hold" in _tags(relabelled)
        _assert_refused(his.delete(f"/Patient/{pid}"), f"Patient/{pid}")


def test_a_patient_not_under_hold_is_still_deleted(rights_live: LiveServer) -> None:
    live = rights_live
    held = create(live, full_patient())
    erase(live, held)
    pid = create(live, full_patient())
    with _fhir(live) as his:
        assert his.delete(f"/Patient/{pid}").status_code == 204
        assert his.get(f"/Patient/{pid}").status_code == 410
        assert his.get(f"/Patient/{held}").status_code == 200
