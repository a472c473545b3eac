"""Unit tests: decision rules, key rings, AES-GCM sealing, pseudonyms, signatures, allowlist config."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.errors import InvalidInput
from common.settings import CrmSettings, Settings
from consent.keys import KeyMaterialError, KeyStore
from consent.pdp import ConsentRecord, decide
from consent.purposes import APPOINTMENT_REMINDER, MARKETING, POST_VISIT_CARE, build_consent, check_consent
from crm_bridge.config import ProjectionConfig
from crm_bridge.delivery import sign, verify_signature
from crm_bridge.outbox_hook import appointment_event
from crm_bridge.projection import project_appointment, project_encounter, project_patient
from crm_bridge.worker_loop import backoff_s


def record(
    cid: str,
    *,
    permit: bool,
    purposes: tuple[str, ...],
    at: int,
    status: str = "active",
    recipients: tuple[str, ...] = (),
) -> ConsentRecord:
    return ConsentRecord(cid, status, permit, purposes, recipients, at, None, at)


def test_default_deny_and_latest_answer_wins() -> None:
    kw: dict[str, Any] = {
        "patient_id": "1",
        "purpose": APPOINTMENT_REMINDER,
        "recipient": "crm",
        "at_us": 100,
        "serves": (APPOINTMENT_REMINDER, POST_VISIT_CARE),  # the CRM serves care purposes
    }
    assert decide([], **kw).reason == "no-consent"
    granted = record("a", permit=True, purposes=(APPOINTMENT_REMINDER,), at=10)
    assert decide([granted], **kw).permit
    withdrawn = record("b", permit=False, purposes=(APPOINTMENT_REMINDER,), at=20)
    assert decide([granted, withdrawn], **kw).reason == "withdrawn"
    regranted = record("c", permit=True, purposes=(APPOINTMENT_REMINDER,), at=30)
    assert decide([granted, withdrawn, regranted], **kw).permit
    inactive = record("d", permit=True, purposes=(APPOINTMENT_REMINDER,), at=40, status="inactive")
    assert not decide([inactive], **kw).permit
    other_crm = record("e", permit=True, purposes=(APPOINTMENT_REMINDER,), at=10, recipients=("other",))
    assert not decide([other_crm], **kw).permit
    assert not decide([granted], **{**kw, "purpose": POST_VISIT_CARE}).permit


def test_restricted_labels_and_marketing_opt_out() -> None:
    granted = record("a", permit=True, purposes=(APPOINTMENT_REMINDER,), at=10)
    for label in ("R", "V", "PSY", "HIV"):
        d = decide(
            [granted], patient_id="1", purpose=APPOINTMENT_REMINDER, recipient="c", at_us=1, labels={label}
        )
        assert not d.permit and d.reason == "restricted-label"
    old_out = record("o", permit=False, purposes=(MARKETING,), at=1)
    new_in = record("i", permit=True, purposes=(MARKETING,), at=99)
    assert (
        decide([old_out, new_in], patient_id="1", purpose=MARKETING, recipient="c", at_us=100).reason
        == "opt-out"
    )


def test_consent_profile_rules() -> None:
    good = build_consent(
        "1",
        POST_VISIT_CARE,
        permit=True,
        date_time="2026-01-01",
        channel="web",
        text_version="v1",
        text_shown="t",
    )
    check_consent(good)
    for broken in (
        {**good, "patient": {"reference": "Group/1"}},
        {**good, "dateTime": None},
        {**good, "extension": []},
        {**good, "sourceAttachment": None},
    ):
        with pytest.raises(InvalidInput):
            check_consent(broken)
    check_consent(
        build_consent("1", MARKETING, permit=False, date_time="2026-01-01", channel="sms")
    )  # opt-out needs no text


def test_field_cipher_rotation_and_tamper(tmp_path: Path) -> None:
    keys = KeyStore.load_or_create(str(tmp_path / "k.json"))
    assert (tmp_path / "k.json").stat().st_mode & 0o777 == 0o600
    kid, blob = keys.cipher.seal(b"+84912345678", b"row-1")
    assert b"912345678" not in blob
    keys.rotate_field_key()
    again = KeyStore.load_or_create(str(tmp_path / "k.json"))
    assert again.cipher.open(kid, blob, b"row-1") == b"+84912345678"
    assert again.cipher.seal(b"x", b"a")[0] == "f2"
    with pytest.raises(KeyMaterialError):
        again.cipher.open(kid, blob, b"row-2")  # bound to its row
    with pytest.raises(KeyMaterialError):
        again.cipher.open(kid, blob[:-1] + bytes([blob[-1] ^ 1]), b"row-1")


def test_pseudonyms_stable_per_crm_and_rotatable(tmp_path: Path) -> None:
    keys = KeyStore.load_or_create(str(tmp_path / "k.json"))
    # digits 0, 1, 8 and 9 are not in the base32 alphabet: the id cannot appear in a pseudonym by chance
    a = keys.pseudonym("crm-a", "9180")
    assert a == keys.pseudonym("crm-a", "9180") and a.startswith("k1.") and "9180" not in a[3:]
    assert a != keys.pseudonym("crm-b", "9180") and a != keys.pseudonym("crm-a", "9181")
    old, new = keys.rotate_pseudonym_key("crm-a")
    assert (old, new) == ("k1", "k2")
    assert keys.pseudonym("crm-a", "9180", kid="k1") == a != keys.pseudonym("crm-a", "9180")
    env = {"CAREBRIDGE_CRM_KEYS": (tmp_path / "k.json").read_text()}
    assert (
        KeyStore.load_or_create(Settings.from_env(env).crm.key_source).pseudonym("crm-a", "9180", kid="k1")
        == a
    )


def test_environment_keys_never_make_up_a_pseudonym_key(tmp_path: Path) -> None:
    """A ring made up in memory would give the patient another pseudonym in every process."""
    KeyStore.load_or_create(str(tmp_path / "k.json")).pseudonym("crm-a", "1")
    env = {"CAREBRIDGE_CRM_KEYS": (tmp_path / "k.json").read_text()}
    keys = KeyStore.load_or_create(Settings.from_env(env).crm.key_source)
    assert keys.pseudonym("crm-a", "1") == KeyStore.load_or_create(
        Settings.from_env(env).crm.key_source
    ).pseudonym("crm-a", "1")
    with pytest.raises(KeyMaterialError, match=r"crm-b.*CAREBRIDGE_CRM_KEYS"):
        keys.pseudonym("crm-b", "1")
    assert "crm-b" not in keys.rings


@given(st.binary(max_size=2000), st.binary(min_size=1, max_size=64))
def test_signature_round_trip(body: bytes, secret: bytes) -> None:
    t = int(time.time())
    header = sign(secret, body, t)
    assert verify_signature(secret, body, header)
    assert not verify_signature(secret, body + b"x", header)
    assert not verify_signature(secret, body, header, now=t + 301)  # replay window


def test_backoff_grows_with_jitter_and_cap() -> None:
    for attempt in range(1, 12):
        delay = backoff_s(attempt, 1.0, 60.0)
        cap = min(60.0, 2 ** (attempt - 1))
        assert cap / 2 <= delay <= cap


def test_projection_config_and_projections(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        ProjectionConfig.parse({"clients": {"c": {"fields": {"patient": ["address"]}}}})
    with pytest.raises(InvalidInput):
        ProjectionConfig.parse({"clients": {"c": {"fields": {"condition": ["code"]}}}})
    example = Path(__file__).resolve().parents[2] / "config" / "crm_projection.example.yaml"
    assert ProjectionConfig.load(str(example)).clients
    narrow = ProjectionConfig.parse({"clients": {"c": {"fields": {"patient": ["gender"]}}}}).clients["c"]
    patient = {
        "gender": "female",
        "birthDate": "2001-02-25",
        "name": [{"text": "Võ Ngọc Ánh"}],
        "telecom": [{"system": "other", "value": "zalo:0938555666"}],
    }
    assert project_patient(narrow, patient, "k1.x") == {"pseudonym": "k1.x", "gender": "female"}
    wide = ProjectionConfig.load(str(example)).clients["crm-main"]
    assert project_patient(wide, patient, "k1.x")["zalo"] == "0938555666"
    assert project_appointment(narrow, {"start": "x"}) == {}
    assert "completed_at" in project_encounter(wide, {"period": {"end": "2026-01-01"}})
    assert Settings.from_env({"CAREBRIDGE_CRM_HIS_MLLP": "h:2575"}).crm.his_endpoint() == ("h", 2575)
    assert json.loads(json.dumps(CrmSettings().model_dump(mode="json")))


def test_appointment_transitions() -> None:
    booked = {"status": "booked", "start": "a"}
    assert appointment_event(None, booked) == "appointment.booked"
    assert appointment_event({"status": "proposed"}, booked) == "appointment.booked"
    assert appointment_event(booked, {**booked, "start": "b"}) == "appointment.rescheduled"
    assert appointment_event(booked, booked) is None
    assert appointment_event(booked, {"status": "cancelled"}) == "appointment.cancelled"
    assert appointment_event({"status": "proposed"}, {"status": "cancelled"}) is None  # a refused CRM booking
    assert appointment_event(booked, {"status": "noshow"}) == "appointment.noshow"
    assert appointment_event(booked, {"status": "fulfilled"}) == "appointment.fulfilled"
