"""Deadlines of Decree 356/2025/ND-CP Art. 5 with a controllable clock (both backends, real HTTP)."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from common.settings import Settings
from consent.rights.calendar import VN_TZ, WorkingCalendar, iso, local_date, to_us
from tests.crm_bridge.conftest import full_patient
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
