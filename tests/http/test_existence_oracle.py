"""A patient token cannot tell another patient's ids from missing ones (issue #16 item 8), both backends.

Before: 403 for an existing id of another patient, 404 for an unknown id.  Now
both are the same 404 OperationOutcome (id swapped), on read, vread, history
and ``$everything``; writes are refused (403) before any lookup for both.  The
concealed refusal is still one denial (outcome 12) in the audit trail.
"""

from __future__ import annotations

import uuid

import httpx

from tests.audit_http.conftest import Auditor, request_ids
from tests.http.conftest import FHIR_JSON, LiveServer, fhir_post, patient


def _same(a: httpx.Response, b: httpx.Response, real: str, fake: str) -> None:
    """What the caller learns (status and body, the probed id swapped) is identical."""
    assert a.status_code == b.status_code == 404, (a.text, b.text)
    assert a.text.replace(real, fake) == b.text
    assert a.json()["resourceType"] == "OperationOutcome"


def test_other_patients_ids_and_missing_ids_answer_the_same(
    live_server: LiveServer, client: httpx.Client
) -> None:
    mine = fhir_post(client, "/Patient", patient("ORACLE-MINE")).json()["id"]
    other = fhir_post(client, "/Patient", patient("ORACLE-OTHER")).json()["id"]
    visit = {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{other}"},
    }
    their_visit = fhir_post(client, "/Encounter", visit).json()["id"]
    fake = str(uuid.uuid4())
    headers = {"Accept": FHIR_JSON, **live_server.auth("patient", patient_id=mine)}
    with httpx.Client(base_url=live_server.fhir_url, headers=headers, timeout=30) as own:
        for kind, real in (("Patient", other), ("Encounter", their_visit)):
            for suffix in ("", "/_history/1", "/_history"):
                _same(own.get(f"/{kind}/{real}{suffix}"), own.get(f"/{kind}/{fake}{suffix}"), real, fake)
        _same(own.get(f"/Patient/{other}/$everything"), own.get(f"/Patient/{fake}/$everything"), other, fake)
        # writes: a patient token may not write at all, so existence is never looked up
        body = patient("ORACLE-W", gender="other")
        for target in (other, fake):
            put = own.put(
                f"/Patient/{target}", json={**body, "id": target}, headers={"Content-Type": FHIR_JSON}
            )
            assert put.status_code == 403, put.text
            assert own.delete(f"/Patient/{target}").status_code == 403
        probe = own.get(f"/Patient/{other}")
        assert own.get(f"/Patient/{mine}").status_code == 200

    auditor = Auditor(live_server)
    try:
        denials = [e for e in auditor.events(outcome="12") if probe.headers["x-request-id"] in request_ids(e)]
        assert len(denials) == 1 and denials[0]["action"] == "R"
    finally:
        auditor.http.close()
