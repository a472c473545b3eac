"""Issue #18 item 2: a consent reaches only the CRM it names or the CRMs serving its purpose; a new
CRM reads from its registration; a withdrawal takes past events out of the feed; feed pages are
audited.  Both backends, through a live server and real CRM tokens."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from audit.schema import audit_event
from consent.purposes import APPOINTMENT_REMINDER, MARKETING, POST_VISIT_CARE, build_consent
from crm_bridge.config import ProjectionConfig
from gateway.cli import main
from tests.crm_bridge.conftest import (
    CRM_ID,
    CrmClient,
    appointment,
    counter_consent,
    encounter,
    full_patient,
    his,
    recent,
    serve_crm,
)
from tests.http.live import LiveServer

MARKETING_CRM = "crm-marketing"
LATE_CRM = "crm-late"
CARE = [APPOINTMENT_REMINDER, POST_VISIT_CARE]
CONFIG = {
    "clients": {
        CRM_ID: {
            "purposes": CARE,
            "fields": {
                "patient": ["pseudonym", "display_name", "phone"],
                "appointment": ["appointment_id", "start", "status"],
                "encounter": ["completed_at"],
            },
        },
        MARKETING_CRM: {"purposes": [MARKETING], "fields": {"patient": ["pseudonym", "birth_year"]}},
        LATE_CRM: {"purposes": CARE, "fields": {"patient": ["pseudonym", "display_name"]}},
    }
}


@pytest.fixture
def live(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    with serve_crm(database_url, tmp_path, config=CONFIG) as server:
        yield server


def _unnamed(patient_id: str, purpose: str, *, permit: bool = True) -> dict[str, Any]:
    """A grant (or withdrawal) naming no recipient, as the front desk records it."""
    return build_consent(
        patient_id,
        purpose,
        permit=permit,
        date_time=recent(1),
        channel="counter",
        text_version="v4",
        text_shown="Tôi đồng ý.",
    )


def _post(live: LiveServer, resource: dict[str, Any]) -> str:
    with his(live) as http:
        response = http.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def test_the_projection_file_declares_purposes_and_refuses_unknown_ones() -> None:
    config = ProjectionConfig.parse(CONFIG)
    assert config.clients[CRM_ID].purposes == frozenset(CARE)
    assert config.clients[MARKETING_CRM].purposes == frozenset({MARKETING})
    assert ProjectionConfig.parse({"clients": {"x": {"fields": {}}}}).clients["x"].purposes == frozenset()
    with pytest.raises(Exception, match="unknown purpose"):
        ProjectionConfig.parse({"clients": {"x": {"purposes": ["newsletter"], "fields": {}}}})


def test_an_unnamed_consent_reaches_only_the_crms_serving_its_purpose(live: LiveServer) -> None:
    main_crm, marketing = CrmClient(live), CrmClient(live, MARKETING_CRM)
    pid = _post(live, full_patient())
    _post(live, _unnamed(pid, APPOINTMENT_REMINDER))
    _post(live, appointment(pid))
    assert [e["type"] for e in main_crm.feed()] == [
        "consent.changed",
        "patient.upserted",
        "appointment.booked",
    ]
    assert marketing.feed() == []  # the care consent names no recipient: not the marketing CRM

    # naming the marketing CRM explicitly does permit it (a consent binds its named recipient)
    named = build_consent(
        pid,
        APPOINTMENT_REMINDER,
        permit=True,
        date_time=recent(1),
        channel="counter",
        text_version="v4",
        text_shown="Đồng ý",
        recipient=MARKETING_CRM,
    )
    _post(live, named)
    assert [e["type"] for e in marketing.feed()] == ["consent.changed", "patient.upserted"]
    # and an unnamed marketing consent reaches the marketing CRM, not the care CRM
    other = _post(live, full_patient())
    _post(live, _unnamed(other, MARKETING))
    subjects = {e["subject"] for e in marketing.feed()}
    assert live.runtime.crm.keys.pseudonym(MARKETING_CRM, other) in subjects
    assert live.runtime.crm.keys.pseudonym(CRM_ID, other) not in {e["subject"] for e in main_crm.feed()}
    # an unnamed withdrawal applies to every CRM, the one named by the grant included
    _post(live, _unnamed(pid, APPOINTMENT_REMINDER, permit=False))
    last = marketing.feed()[-1]
    assert last["type"] == "consent.changed" and last["data"]["withdrawn"] == [APPOINTMENT_REMINDER]
    main_crm.http.close()
    marketing.http.close()


def _feed_starts(live: LiveServer) -> dict[str, int]:
    from crm_bridge.schema import crm_feed_start

    with live.runtime.engine.connect() as conn:
        rows = conn.execute(select(crm_feed_start.c.crm_id, crm_feed_start.c.start_seq)).all()
    return {str(r[0]): int(r[1]) for r in rows}


def test_a_crm_registered_later_reads_from_its_registration_unless_a_backlog_is_granted(
    live: LiveServer, database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pid = _post(live, full_patient())
    _post(live, _unnamed(pid, APPOINTMENT_REMINDER))  # written for crm-late too, before it exists
    late = CrmClient(live, LATE_CRM)
    assert late.feed() == []  # nothing from before its registration, even from cursor 0
    late.http.post("/subscriptions", json={"url": "https://crm.example.vn/hook", "from_cursor": 0})
    later = _post(live, full_patient())
    _post(live, _unnamed(later, POST_VISIT_CARE))
    fresh = late.feed()
    assert [e["type"] for e in fresh] == ["consent.changed", "patient.upserted"]
    assert {e["subject"] for e in fresh} == {live.runtime.crm.keys.pseudonym(LATE_CRM, later)}

    # the operator grants the backlog explicitly; the command is audited with its reason
    monkeypatch.setenv("CAREBRIDGE_CRM_KEY_FILE", str(live.runtime.settings.crm.key_file))
    reason = "contract signed 2026-11-01 covers the backlog"
    args = ["crm", "grant-backlog", "--crm", LATE_CRM, "--reason", reason, "--database-url", database_url]
    assert main(args) == 0
    assert f"backlog granted to {LATE_CRM}" in capsys.readouterr().out
    assert _feed_starts(live)[LATE_CRM] == 0
    everything = late.feed()
    assert live.runtime.crm.keys.pseudonym(LATE_CRM, pid) in {e["subject"] for e in everything}
    with live.runtime.engine.connect() as conn:
        grants = [
            orjson.loads(row[0])
            for row in conn.execute(select(audit_event.c.content))
            if b"crm-grant-backlog" in row[0]
        ]
    assert len(grants) == 1 and reason in orjson.dumps(grants[0]).decode()
    # a reason is required
    assert_exit = pytest.raises(SystemExit)
    with assert_exit:
        main(["crm", "grant-backlog", "--crm", LATE_CRM, "--reason", "x", "--database-url", database_url])
    late.http.close()


def test_a_withdrawal_takes_past_events_of_that_purpose_out_of_the_feed(live: LiveServer) -> None:
    crm = CrmClient(live)
    pid = _post(live, full_patient())
    _post(live, counter_consent(pid, APPOINTMENT_REMINDER))
    _post(live, counter_consent(pid, POST_VISIT_CARE))
    _post(live, appointment(pid))
    _post(live, encounter(pid))
    before = [e["type"] for e in crm.feed()]
    assert "appointment.booked" in before and "encounter.completed" in before

    subject = crm.feed()[0]["subject"]
    withdrawn = crm.http.post(
        "/consents", json={"subject": subject, "purpose": APPOINTMENT_REMINDER, "granted": False}
    )
    assert withdrawn.status_code == 201, withdrawn.text
    reread = crm.feed()  # a re-reader from cursor 0
    types = [e["type"] for e in reread]
    assert "appointment.booked" not in types  # the reminder-purpose events are gone
    assert "encounter.completed" in types and "patient.upserted" in types  # post-visit care remains
    assert types[-1] == "consent.changed"

    crm.http.post("/consents", json={"subject": subject, "purpose": POST_VISIT_CARE, "granted": False})
    reread = crm.feed()
    assert {e["type"] for e in reread} == {"consent.changed"}  # pseudonyms and purposes only
    text = orjson.dumps(reread).decode()
    assert "Nguyễn Văn An" not in text and "+84912345678" not in text
    crm.http.close()


def test_every_feed_page_is_audited_with_cursor_range_and_count(live: LiveServer) -> None:
    crm = CrmClient(live)
    pid = _post(live, full_patient())
    _post(live, counter_consent(pid, APPOINTMENT_REMINDER))
    _post(live, appointment(pid))
    first = crm.http.get("/changes", params={"cursor": 0, "limit": 2}).json()
    second = crm.http.get("/changes", params={"cursor": first["next_cursor"], "limit": 2}).json()
    empty = crm.http.get("/changes", params={"cursor": second["next_cursor"], "limit": 2}).json()
    assert len(first["events"]) == 2 and len(second["events"]) == 1 and empty["events"] == []
    with live.runtime.engine.connect() as conn:
        reads = [
            orjson.loads(row[0])
            for row in conn.execute(select(audit_event.c.content).order_by(audit_event.c.seq))
            if b"crm-feed-read" in row[0]
        ]
    assert len(reads) == 3  # one AuditEvent per page, the empty one included
    descriptions = [r["outcomeDesc"] for r in reads]
    assert descriptions[0] == f"crm={CRM_ID}; cursor 0..{first['next_cursor']}; events 2"
    assert (
        descriptions[1] == f"crm={CRM_ID}; cursor {first['next_cursor']}..{second['next_cursor']}; events 1"
    )
    assert descriptions[2].endswith("events 0")
    who = {agent.get("who", {}).get("identifier", {}).get("value") for agent in reads[0]["agent"]}
    assert CRM_ID in who
    assert f"Patient/{pid}" in orjson.dumps(reads[0]).decode()  # the disclosure names the patient
    crm.http.close()
