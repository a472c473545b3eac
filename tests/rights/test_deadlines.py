"""Deadlines of Decree 356/2025/ND-CP Art. 5 with a controllable clock (both backends, real HTTP).

Every clock of the one table (``consent.rights.deadlines``) is checked here: working days for the
acknowledgement across weekends and Vietnamese holidays, calendar days for the periods.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import httpx
import pytest

from common.settings import Settings
from consent.purposes import APPOINTMENT_REMINDER
from consent.rights import model as m
from consent.rights.calendar import VN_TZ, WorkingCalendar, iso, local_date, to_us
from consent.rights.deadlines import (
    ACCESS,
    ERASURE,
    OBJECTION,
    RECTIFICATION,
    REQUEST_TYPES,
    RESTRICTION,
    WITHDRAWAL,
    ack_working_days,
    completion_days,
    table,
)
from tests.crm_bridge.conftest import CrmClient, appointment, counter_consent, full_patient
from tests.http.live import LiveServer
from tests.rights.conftest import create, privacy, start_clock

CAL = WorkingCalendar.load()


@pytest.mark.parametrize(
    ("filed", "due"),
    [
        (date(2026, 11, 20), date(2026, 11, 24)),  # Friday: the weekend does not count
        (date(2026, 11, 18), date(2026, 11, 20)),  # Wednesday -> Friday
        (date(2025, 1, 24), date(2025, 2, 4)),  # Friday before Tết Ất Tỵ (27/1 - 31/1 off)
        (date(2026, 4, 24), date(2026, 4, 29)),  # Hùng Kings moved to Monday 27/4
        (date(2026, 4, 29), date(2026, 5, 5)),  # 30/4 and 1/5, then the weekend
        (date(2025, 8, 29), date(2025, 9, 4)),  # National Day 1/9 - 2/9
    ],
)
def test_acknowledgement_counts_working_days(filed: date, due: date) -> None:
    assert CAL.add_working_days(filed, 2) == due
    filed_us = to_us(datetime(filed.year, filed.month, filed.day, 16, 30))
    deadline = CAL.working_days_due(filed_us, 2)
    assert local_date(deadline) == due
    assert iso(deadline) == f"{due.isoformat()}T23:59:59+07:00"


def test_holiday_file_replaces_the_shipped_list(tmp_path: object) -> None:
    from pathlib import Path

    file = Path(str(tmp_path)) / "holidays.txt"
    file.write_text("# only one day off\n2026-11-23\n", encoding="utf-8")
    cal = WorkingCalendar.load(
        Settings.from_env({"CAREBRIDGE_PRIVACY_HOLIDAYS_FILE": str(file)}).privacy.holidays_file
    )
    assert cal.add_working_days(date(2026, 11, 20), 2) == date(2026, 11, 25)
    assert cal.is_working_day(date(2026, 9, 2))  # shipped holidays are replaced


def test_clocks_extension_and_overdue_over_http(rights_live: LiveServer) -> None:
    clock = start_clock(rights_live, datetime(2026, 11, 20, 10, 0, tzinfo=VN_TZ))  # a Friday
    pid = create(rights_live, full_patient())
    with privacy(rights_live, rights_live.auth("patient", patient_id=pid)) as mine:
        erasure = mine.post("/requests", json={"type": "erasure", "reason": "xoá dữ liệu CRM"}).json()
        access = mine.post("/requests", json={"type": "access", "reason": "xem dữ liệu của tôi"}).json()
    assert erasure["clocks"]["acknowledge_by"] == "2026-11-24T23:59:59+07:00"
    assert erasure["clocks"]["complete_by"] == "2026-12-10T23:59:59+07:00"  # 20 days (no CRM had the patient)
    assert erasure["clocks"]["processor_involved"] is False
    assert access["clocks"]["complete_by"] == "2026-11-30T23:59:59+07:00"  # 10 days
    assert erasure["clocks"]["state"] == "on-time"

    with privacy(rights_live, rights_live.auth("privacy_officer")) as officer:
        assert officer.get("/requests", params={"overdue": "true"}).json()["total"] == 0
        clock.set(datetime(2026, 11, 24, 9, 0, tzinfo=VN_TZ))  # Tuesday: last day to acknowledge
        near = officer.get("/requests", params={"near_due": "true"}).json()
        assert {r["id"] for r in near["requests"]} == {erasure["id"], access["id"]}
        clock.set(datetime(2026, 11, 25, 9, 0, tzinfo=VN_TZ))  # Wednesday: acknowledgement overdue
        overdue = officer.get("/requests", params={"overdue": "true"}).json()
        assert {r["id"] for r in overdue["requests"]} == {erasure["id"], access["id"]}
        assert overdue["requests"][0]["clocks"]["next_deadline"] == "acknowledgement"
        metrics = officer.get(f"{rights_live.base_url}/metrics").text
        assert 'carebridge_privacy_requests_open{clock="overdue",type="erasure"} 1.0' in metrics

        assert officer.post(f"/requests/{erasure['id']}/acknowledge").status_code == 200
        again = officer.post(f"/requests/{erasure['id']}/acknowledge")
        assert again.status_code == 422
        overdue = officer.get("/requests", params={"overdue": "true"}).json()
        assert [r["id"] for r in overdue["requests"]] == [access["id"]]

        # one extension, at most 20 days, with a reason
        no_reason = officer.post(f"/requests/{erasure['id']}/extend", json={"days": 10})
        assert no_reason.status_code == 400
        too_long = officer.post(f"/requests/{erasure['id']}/extend", json={"days": 21, "reason": "CRM chậm"})
        assert too_long.status_code == 400
        extended = officer.post(
            f"/requests/{erasure['id']}/extend",
            json={"days": 10, "reason": "CRM cần thêm thời gian xoá bản sao"},
        )
        assert extended.status_code == 200, extended.text
        assert extended.json()["clocks"]["complete_by"] == "2026-12-20T23:59:59+07:00"
        assert extended.json()["extension_reason"] == "CRM cần thêm thời gian xoá bản sao"
        twice = officer.post(f"/requests/{erasure['id']}/extend", json={"days": 5, "reason": "lần nữa"})
        assert twice.status_code == 422 and "once" in twice.text
        assert (
            officer.get(f"/requests/{erasure['id']}").json()["clocks"]["complete_by"].startswith("2026-12-20")
        )

        clock.set(datetime(2026, 12, 18, 9, 0, tzinfo=VN_TZ))  # Friday before the extended deadline
        near = officer.get("/requests", params={"near_due": "true"}).json()
        assert erasure["id"] in {r["id"] for r in near["requests"]}
        clock.set(datetime(2026, 12, 21, 0, 0, 1, tzinfo=VN_TZ))
        overdue = officer.get("/requests", params={"overdue": "true"}).json()
        assert erasure["id"] in {r["id"] for r in overdue["requests"]}
        assert overdue["requests"][-1]["clocks"]["state"] == "overdue"

        # processing closes the clock; the request then leaves the overdue list
        done = officer.post(f"/requests/{access['id']}/process", json={})
        assert done.status_code == 200 and done.json()["status"] == "completed"
        assert done.json()["clocks"]["state"] == "done"
        closed = officer.post(f"/requests/{access['id']}/close", json={"reason": "đã gửi bản sao"})
        assert closed.status_code == 200 and closed.json()["status"] == "closed"
        remaining = officer.get("/requests", params={"overdue": "true"}).json()
        assert access["id"] not in {r["id"] for r in remaining["requests"]}

    # the patient follows their request and sees the clocks
    with privacy(rights_live, rights_live.auth("patient", patient_id=pid)) as mine:
        followed = mine.get(f"/requests/{erasure['id']}").json()
        assert followed["clocks"]["extended"] is True and "identity_verification" not in followed


# -- issue #18 item 9: every clock from the one table, with its citation ----------------------------

FRIDAY_BEFORE_HOLIDAYS = datetime(2026, 4, 24, 16, 30, tzinfo=VN_TZ)  # Hùng Kings Mon 27/4, then 30/4-1/5


def test_every_clock_is_in_one_table_citing_decree_356_art_5() -> None:
    rows = {r["clock"]: r for r in table()}
    assert set(rows) == {"acknowledge", *REQUEST_TYPES}
    for row in rows.values():
        assert str(row["basis"]).startswith("Decree 356/2025/ND-CP Art. 5"), row
        assert row["unit"] == ("working" if row["clock"] == "acknowledge" else "calendar"), row
    # the figures the decree gives (docs/patient-rights.md, "Deadlines: the reading taken")
    assert rows["acknowledge"]["days"] == 2
    for kind in (WITHDRAWAL, RESTRICTION, OBJECTION):
        assert (rows[kind]["days"], rows[kind]["with_processor"], rows[kind]["max_extension"]) == (15, 20, 15)
        assert rows[kind]["source"] == "decree"
    assert (rows[ERASURE]["days"], rows[ERASURE]["with_processor"], rows[ERASURE]["max_extension"]) == (
        20,
        30,
        20,
    )
    assert rows[ACCESS]["days"] == rows[RECTIFICATION]["days"] == 10
    # the names the workflow uses are read from the table, not kept beside it
    assert m.ACK_WORKING_DAYS == 2 and {t: completion_days(t, False) for t in REQUEST_TYPES} == m.DUE_DAYS


@pytest.mark.parametrize(
    ("kind", "processor", "due"),
    [
        (WITHDRAWAL, False, date(2026, 5, 9)),  # 15 calendar days: a Saturday, not moved (stricter)
        (WITHDRAWAL, True, date(2026, 5, 14)),  # 20 when a processor must stop
        (RESTRICTION, False, date(2026, 5, 9)),
        (RESTRICTION, True, date(2026, 5, 14)),
        (OBJECTION, False, date(2026, 5, 9)),
        (OBJECTION, True, date(2026, 5, 14)),
        (ACCESS, False, date(2026, 5, 4)),  # 10 days: the holidays inside count as days
        (ACCESS, True, date(2026, 5, 4)),  # no processor figure: unchanged
        (RECTIFICATION, False, date(2026, 5, 4)),
        (ERASURE, False, date(2026, 5, 14)),
        (ERASURE, True, date(2026, 5, 24)),
    ],
)
def test_completion_clock_counts_calendar_days_across_holidays(kind: str, processor: bool, due: date) -> None:
    filed = to_us(FRIDAY_BEFORE_HOLIDAYS)
    deadline = m.due_us(CAL, kind, filed, processor)
    assert local_date(deadline) == due
    assert iso(deadline) == f"{due.isoformat()}T23:59:59+07:00"
    # the acknowledgement of the same filing counts working days: Mon 27/4 is off -> Wed 29/4
    assert local_date(CAL.working_days_due(filed, ack_working_days())) == date(2026, 4, 29)


def _file(client: httpx.Client, kind: str, pid: str) -> dict[str, Any]:
    filed = client.post(
        "/requests",
        json={
            "type": kind,
            "patient": f"Patient/{pid}",
            "reason": "bệnh nhân yêu cầu tại quầy",
            "identity_verification": "CCCD đối chiếu tại quầy",
            "scope": {"purposes": [APPOINTMENT_REMINDER]},
        },
    )
    assert filed.status_code == 201, filed.text
    body: dict[str, Any] = filed.json()
    return body


def test_withdrawal_restriction_objection_clocks_over_http(
    rights_live: LiveServer, rights_crm: CrmClient
) -> None:
    """15 days, 20 when the CRM holds the patient, one extension of at most 15 (both backends)."""
    clock = start_clock(rights_live, FRIDAY_BEFORE_HOLIDAYS)
    shared = create(rights_live, full_patient())  # the CRM receives this patient
    create(rights_live, counter_consent(shared, APPOINTMENT_REMINDER))
    create(rights_live, appointment(shared))
    assert [e["type"] for e in rights_crm.feed()][-1] == "appointment.booked"
    alone = create(rights_live, full_patient())  # no CRM ever received this one
    with privacy(rights_live, rights_live.auth("privacy_officer")) as officer:
        for kind in (WITHDRAWAL, RESTRICTION, OBJECTION):
            with_crm, without = _file(officer, kind, shared), _file(officer, kind, alone)
            assert with_crm["clocks"]["processor_involved"] is True, kind
            assert with_crm["clocks"]["complete_by"] == "2026-05-14T23:59:59+07:00", kind
            assert without["clocks"]["processor_involved"] is False, kind
            assert without["clocks"]["complete_by"] == "2026-05-09T23:59:59+07:00", kind
            assert with_crm["clocks"]["acknowledge_by"] == "2026-04-29T23:59:59+07:00", kind
            too_long = officer.post(
                f"/requests/{without['id']}/extend", json={"days": 16, "reason": "chờ CRM"}
            )
            assert too_long.status_code == 400 and "15" in too_long.text, kind
            longest = officer.post(f"/requests/{without['id']}/extend", json={"reason": "chờ CRM xác nhận"})
            assert longest.status_code == 200, longest.text
            assert longest.json()["clocks"]["extension_days"] == 15
            assert longest.json()["clocks"]["complete_by"] == "2026-05-24T23:59:59+07:00"
        # an erasure keeps its own 20-day extension limit
        erasure = _file(officer, ERASURE, alone)
        assert (
            officer.post(
                f"/requests/{erasure['id']}/extend", json={"days": 20, "reason": "chờ HIS"}
            ).status_code
            == 200
        )

        # a withdrawal is carried out as a deny Consent: the CRM gets nothing more for that purpose
        withdrawal = officer.get(
            "/requests", params={"patient": f"Patient/{shared}", "status": "received"}
        ).json()
        wid = next(r["id"] for r in withdrawal["requests"] if r["type"] == WITHDRAWAL)
        clock.set(
            datetime.now(VN_TZ) + timedelta(minutes=1)
        )  # after the consent (dated 2 h ago) it withdraws
        done = officer.post(f"/requests/{wid}/process", json={})
        assert done.status_code == 200 and done.json()["status"] == "completed", done.text
        document = officer.get(f"/requests/{wid}/response").json()
        assert document["type"] == WITHDRAWAL and document["actions"][0]["what"].endswith(
            APPOINTMENT_REMINDER
        )
    before = len(rights_crm.feed())
    create(rights_live, appointment(shared, start="2026-12-02T09:00:00+07:00"))
    assert [e["type"] for e in rights_crm.feed()[before:]] == []
