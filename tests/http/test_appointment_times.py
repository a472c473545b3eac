"""FHIR R4 Appointment invariants app-2 and app-3 on REST writes (https://hl7.org/fhir/R4/appointment.html#invs).

The CRM reminder is sent from Appointment.start: a booked appointment without
one is refused with a 400 OperationOutcome that names the element.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.http.conftest import FHIR_JSON, fhir_post, patient


def _appointment(patient_id: str, status: str, **times: str) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "status": status,
        "description": "Khám tim mạch định kỳ",
        "participant": [{"actor": {"reference": f"Patient/{patient_id}"}, "status": "accepted"}],
        **times,
    }


@pytest.mark.parametrize(
    ("status", "times", "expression"),
    [
        ("booked", {}, "Appointment.start"),
        ("noshow", {}, "Appointment.start"),
        ("booked", {"start": "2021-09-24T09:30:00+07:00"}, "Appointment.end"),
        ("cancelled", {"end": "2021-09-24T10:20:00+07:00"}, "Appointment.start"),
    ],
    ids=["booked-untimed", "noshow-untimed", "start-only", "end-only"],
)
def test_appointment_without_times_is_refused(
    client: httpx.Client, status: str, times: dict[str, str], expression: str
) -> None:
    owner = fhir_post(client, "/Patient", patient("MRN-APPT")).json()["id"]
    response = fhir_post(client, "/Appointment", _appointment(owner, status, **times))
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(FHIR_JSON)
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    assert (issue["severity"], issue["code"], issue["expression"]) == ("error", "invalid", [expression])
    assert "app-" in issue["diagnostics"]
    assert client.get("/Appointment", params={"_summary": "count"}).json()["total"] == 0


@pytest.mark.parametrize(
    ("status", "times"),
    [
        ("booked", {"start": "2021-09-24T09:30:00+07:00", "end": "2021-09-24T10:20:00+07:00"}),
        ("proposed", {}),
        ("cancelled", {}),
        ("waitlist", {}),
    ],
)
def test_timed_or_exempt_appointments_are_stored(
    client: httpx.Client, status: str, times: dict[str, str]
) -> None:
    owner = fhir_post(client, "/Patient", patient("MRN-APPT")).json()["id"]
    response = fhir_post(client, "/Appointment", _appointment(owner, status, **times))
    assert response.status_code == 201, response.text
    assert {k: response.json().get(k) for k in times} == times
