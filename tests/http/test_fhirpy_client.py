"""A real FHIR client (fhirpy's SyncFHIRClient) works against the server end to end."""

from __future__ import annotations

import pytest
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound

from tests.http.conftest import LiveServer

SYS = "urn:oid:1.2.704.0.1"


def test_fhirpy_create_read_update_search_history_delete(live_server: LiveServer) -> None:
    client = SyncFHIRClient(live_server.fhir_url, authorization=live_server.headers["Authorization"])
    created = client.resource(
        "Patient",
        identifier=[{"system": SYS, "value": "MRN-FHIRPY"}],
        name=[{"family": "Hoàng", "given": ["Thị", "Mai"], "text": "Hoàng Thị Mai"}],
        gender="female",
        birthDate="1992-05-20",
    )
    created.save()
    pid = created.id
    assert pid
    assert created["meta"]["versionId"] == "1"

    fetched = client.reference("Patient", pid).to_resource()
    assert fetched["name"][0]["text"] == "Hoàng Thị Mai"

    fetched["telecom"] = [{"system": "phone", "value": "+84987654321"}]
    fetched.save()
    assert fetched["meta"]["versionId"] == "2"

    found = client.resources("Patient").search(identifier=f"{SYS}|MRN-FHIRPY").fetch_all()
    assert [p.id for p in found] == [pid]
    assert [p.id for p in client.resources("Patient").search(phone="0987654321").fetch()] == [pid]

    history = client.execute(f"Patient/{pid}/_history", method="get")
    assert [e["resource"]["meta"]["versionId"] for e in history["entry"]] == ["2", "1"]

    fetched.delete()  # type: ignore[no-untyped-call]
    with pytest.raises(ResourceNotFound):
        client.reference("Patient", pid).to_resource()
    assert client.resources("Patient").search(identifier=f"{SYS}|MRN-FHIRPY").fetch() == []
