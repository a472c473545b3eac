"""The one retention rule (``consent.retention``): types, periods, start date, labels, predicates."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from common.errors import BusinessRuleViolation, RetentionHold
from consent.pdp import decide
from consent.purposes import security_labels
from consent.retention import (
    LEGAL_HOLD,
    RESTRICTED,
    RETENTION_YEARS,
    RETENTION_YEARS_DECEASED,
    held_until,
    is_held,
    is_record_type,
    is_restricted,
    refuse_held_deletes,
    retention_start,
    retention_years,
    with_hold_labels,
    with_restricted_label,
)
from fhir_store.model import ResourceChange

HOLD_DAY = date(2026, 6, 1)


def _patient(**extra: Any) -> dict[str, Any]:
    return {"resourceType": "Patient", "id": "p1", **extra}


def _held(resource: dict[str, Any]) -> dict[str, Any]:
    return with_hold_labels(resource)


def test_the_medical_record_types_are_under_retention() -> None:
    assert all(is_record_type(t) for t in ("Patient", "Encounter", "Appointment"))
    assert not is_record_type("Consent")
    assert not is_record_type("Task")


def test_hold_labels_are_added_once_and_recognised() -> None:
    resource = _patient()
    assert not is_held(resource) and not is_restricted(resource)
    with_hold_labels(resource)
    with_hold_labels(resource)  # idempotent
    assert is_held(resource) and is_restricted(resource)
    assert resource["meta"]["security"] == [RESTRICTED]
    assert resource["meta"]["tag"] == [LEGAL_HOLD]


def test_a_restriction_is_not_a_hold() -> None:
    resource = with_restricted_label(_patient())
    assert is_restricted(resource) and not is_held(resource)


def test_a_legal_hold_code_of_another_system_is_not_our_hold() -> None:
    other = _patient(meta={"tag": [{"system": "https://example.org/tags", "code": "legal-hold"}]})
    assert not is_held(other)
    assert not is_held(None) and not is_held({"meta": {"tag": ["legal-hold"]}})


def test_ten_years_in_general_twenty_when_the_patient_died() -> None:
    assert retention_years([_patient()]) == RETENTION_YEARS == 10
    assert retention_years([_patient(deceasedBoolean=True)]) == RETENTION_YEARS_DECEASED == 20
    assert retention_years([_patient(deceasedDateTime="2026-01-02")]) == 20
    assert retention_years([_patient(deceasedBoolean=False)]) == 10


def test_the_period_runs_from_the_latest_clinical_date_never_before_the_hold() -> None:
    encounter = {
        "resourceType": "Encounter",
        "period": {"start": "2026-07-01T08:00:00+07:00", "end": "2026-07-03"},
    }
    appointment = {"resourceType": "Appointment", "start": "2026-09-10T09:00:00+07:00"}
    old = {"resourceType": "Encounter", "period": {"start": "2019-01-01", "end": "2019-01-05"}}
    assert retention_start([old], HOLD_DAY) == HOLD_DAY
    assert retention_start([old, encounter], HOLD_DAY) == date(2026, 7, 3)
    assert retention_start([old, encounter, appointment], HOLD_DAY) == date(2026, 9, 10)
    assert (
        retention_start([{"resourceType": "Encounter", "period": {"end": "garbage-date"}}], HOLD_DAY)
        == HOLD_DAY
    )


def test_held_until_adds_the_period_to_the_start() -> None:
    encounter = {"resourceType": "Encounter", "period": {"end": "2026-07-03"}}
    assert held_until([_patient(), encounter], HOLD_DAY) == date(2036, 7, 3)
    died = _patient(deceasedDateTime="2026-08-20T10:00:00+07:00")
    assert held_until([died, encounter], HOLD_DAY) == date(2046, 8, 20)
    assert held_until([_patient()], date(2028, 2, 29)) == date(2038, 2, 28)


def _delete(previous: dict[str, Any] | None) -> ResourceChange:
    return ResourceChange("delete", "Patient", "p1", 3, 0, None, previous)


def test_a_delete_of_a_held_resource_is_refused_with_the_rule() -> None:
    with pytest.raises(RetentionHold) as refused:
        refuse_held_deletes([_delete(_held(_patient()))])
    error = refused.value
    assert isinstance(error, BusinessRuleViolation)
    assert (error.http_status, error.issue_code) == (409, "business-rule")
    assert "Patient/p1" in error.message and "Circular 33/2025/TT-BYT" in error.message


def test_other_changes_pass() -> None:
    held = _held(_patient())
    refuse_held_deletes([_delete(_patient())])  # not held
    refuse_held_deletes([_delete(with_restricted_label(_patient()))])  # restricted only
    refuse_held_deletes([ResourceChange("update", "Patient", "p1", 4, 0, held, held)])
    refuse_held_deletes([ResourceChange("create", "Patient", "p2", 1, 0, held, None)])


def test_the_decision_point_never_discloses_a_held_resource_even_without_its_label() -> None:
    held = _held(_patient())
    held["meta"]["security"] = []  # a write dropped the R label; the hold tag is still there
    labels = security_labels(held)
    assert "R" in labels
    decision = decide(
        [], patient_id="p1", purpose="appointment-reminder", recipient="crm", at_us=0, labels=labels
    )
    assert not decision.permit and decision.reason == "restricted-label"
    assert security_labels(_patient()) == frozenset()
