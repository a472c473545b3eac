"""Store fixtures: a real FhirStore on each backend, and a patient factory."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from fhir_store.database import make_engine
from fhir_store.model import RequestContext
from fhir_store.repository import FhirStore
from tests.support.store_keys import cipher_for

MRN = "https://id.carebridge.vn/mrn/BVDK_HN"
_counter = itertools.count(1)


@pytest.fixture
def store(database_url: str) -> Iterator[FhirStore]:
    engine = make_engine(database_url, pool_size=24)
    yield FhirStore(engine, cipher=cipher_for(engine))
    engine.dispose()


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext("test-request", client_id="test", role="his_integration", channel="internal")


def patient(mrn: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A valid Vietnamese Patient; every call gets a new record number unless given."""
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [{"system": MRN, "value": mrn or f"BN{next(_counter):06d}"}],
        "name": [{"family": "Nguyễn", "given": ["Văn", "An"], "text": "Nguyễn Văn An"}],
        "gender": "male",
        "birthDate": "1985-03-12",
        "telecom": [{"system": "phone", "value": "+84912345678", "use": "mobile"}],
        "address": [{"line": ["12 Lý Thường Kiệt"], "city": "Phường Hoàn Kiếm", "state": "Hà Nội"}],
    }
    body.update(overrides)
    return body


def encounter(patient_ref: str, visit: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "identifier": [{"system": "https://id.carebridge.vn/visit/BVDK_HN", "value": visit}],
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": patient_ref},
        "period": {"start": "2026-11-20T08:30:00+07:00"},
    }
    body.update(overrides)
    return body
