"""CRM field names have one list (the projection tables); the allowlist vocabulary is derived from it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from common.errors import InvalidInput
from crm_bridge.config import KNOWN_FIELDS, CrmClient, ProjectionConfig
from crm_bridge.projection import (
    PROJECTION_FIELDS,
    project_appointment,
    project_encounter,
    project_patient,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "crm_projection.example.yaml"

PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "name": [{"use": "official", "text": "Nguyễn Văn An"}],
    "gender": "male",
    "birthDate": "1985-03-12",
    "telecom": [
        {"system": "phone", "value": "0912 000 111"},  # stored before the phone rule: leaves in E.164
        {"system": "other", "value": "zalo:an.nguyen"},
    ],
}
APPOINTMENT: dict[str, Any] = {
    "resourceType": "Appointment",
    "id": "a1",
    "status": "booked",
    "start": "2026-11-25T09:00:00+07:00",
    "end": "2026-11-25T09:30:00+07:00",
    "serviceType": [{"coding": [{"code": "KHAM", "display": "Khám bệnh"}]}],
}
ENCOUNTER: dict[str, Any] = {
    "resourceType": "Encounter",
    "status": "finished",
    "period": {"end": "2026-11-25T10:00:00+07:00"},
    "serviceType": {"text": "Khám bệnh"},
}


def _everything() -> CrmClient:
    return CrmClient("all", {kind: names for kind, names in PROJECTION_FIELDS.items()})


def test_config_vocabulary_is_the_projection_tables() -> None:
    assert KNOWN_FIELDS is PROJECTION_FIELDS


def test_every_known_field_is_built_by_the_projection() -> None:
    client = _everything()
    assert set(project_patient(client, PATIENT, "psn-1")) == KNOWN_FIELDS["patient"]
    assert set(project_appointment(client, APPOINTMENT)) == KNOWN_FIELDS["appointment"]
    assert set(project_encounter(client, ENCOUNTER)) == KNOWN_FIELDS["encounter"]
    assert project_patient(client, PATIENT, "psn-1")["phone"] == "+84912000111"


def test_a_field_outside_the_tables_cannot_be_configured() -> None:
    with pytest.raises(InvalidInput):
        ProjectionConfig.parse({"clients": {"c": {"fields": {"patient": ["identifier"]}}}})
    narrow = ProjectionConfig.parse({"clients": {"c": {"fields": {"patient": ["gender"]}}}}).clients["c"]
    assert set(project_patient(narrow, PATIENT, "psn-1")) == {"pseudonym", "gender"}


def test_example_config_names_every_field() -> None:
    """The documented example lists each field once (its first client allows everything)."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    config = ProjectionConfig.parse(data)
    full = config.clients["crm-main"]
    assert dict(full.fields) == dict(KNOWN_FIELDS)
