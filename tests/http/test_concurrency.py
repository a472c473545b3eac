"""20 concurrent conditional creates with one identifier make exactly one Patient (both backends).

HAPI, Microsoft and Medplum servers are known to create duplicates here; the
store's identifier claim table makes it impossible and the losers answer 200
with the winner (https://hl7.org/fhir/R4/http.html#ccreate).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import httpx

from tests.http.conftest import FHIR_JSON, LiveServer, patient

SYS = "urn:oid:1.2.704.0.1"


def test_twenty_concurrent_conditional_creates(live_server: LiveServer) -> None:
    barrier = threading.Barrier(20)
    body = patient("MRN-RACE")

    def create(_: int) -> tuple[int, str]:
        with httpx.Client(base_url=live_server.fhir_url, timeout=60, headers=live_server.headers) as http:
            barrier.wait()
            response = http.post(
                "/Patient",
                json=body,
                headers={"Content-Type": FHIR_JSON, "If-None-Exist": f"identifier={SYS}|MRN-RACE"},
            )
            return response.status_code, response.json()["id"]

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(create, range(20)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 19 + [201], statuses
    assert len({pid for _, pid in results}) == 1
    with httpx.Client(base_url=live_server.fhir_url, headers=live_server.headers) as http:
        search = http.get("/Patient", params={"identifier": f"{SYS}|MRN-RACE"}).json()
        assert search["total"] == 1
        assert http.get("/Patient", params={"_summary": "count"}).json()["total"] == 1
