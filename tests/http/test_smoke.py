from __future__ import annotations

import httpx

from tests.http.conftest import fhir_post, patient


def test_create_read(client: httpx.Client) -> None:
    created = fhir_post(client, "/Patient", patient("MRN-1"))
    assert created.status_code == 201, created.text
    pid = created.json()["id"]
    read = client.get(f"/Patient/{pid}")
    assert read.status_code == 200
    assert read.headers["etag"] == 'W/"1"'
    assert read.content == created.content
