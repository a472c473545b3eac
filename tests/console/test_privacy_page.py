"""The privacy officer's request queue at /console/privacy (issue #19 item 2; Decree 356/2025 Art. 5)."""

from __future__ import annotations

import logging
import re
from datetime import datetime

import httpx
import pytest

from common import mrn_system
from consent import ManualClock
from gateway.console.i18n import VIETNAM
from gateway.privacy_clocks import announce_near_due
from tests.console.conftest import ConsoleServer, audit_events, csrf_of, sign_in

MRN = "BN-PRIV-0042"


def make_patient(console_server: ConsoleServer, mrn: str = MRN, *, family: str = "Đỗ") -> str:
    live = console_server.server
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": mrn_system("BVDK-HN"), "value": mrn}],
        "name": [{"family": family, "given": ["Thị Hoa"]}],
        "birthDate": "1980-02-03",
    }
    response = httpx.post(
        f"{live.fhir_url}/Patient",
        json=patient,
        headers={**live.headers, "Content-Type": "application/fhir+json"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def set_clock(console_server: ConsoleServer, when: datetime) -> ManualClock:
    clock = ManualClock(when.replace(tzinfo=VIETNAM))
    console_server.server.runtime.privacy.deps.clock = clock
    return clock


def file_erasure(client: httpx.Client, page_html: str, patient_id: str) -> httpx.Response:
    return client.post(
        "/console/privacy/file",
        data={
            "csrf_token": csrf_of(page_html),
            "patient": patient_id,
            "type": "erasure",
            "reason": "Tôi không dùng dịch vụ nữa",
            "verification": "CCCD đối chiếu tại quầy",
        },
    )


def subtypes(console_server: ConsoleServer) -> list[tuple[str, str, str]]:
    return [
        (e["subtype"][0]["code"], e["agent"][0]["who"]["identifier"]["value"], e.get("outcomeDesc", ""))
        for e in audit_events(console_server)
        if e.get("subtype")
    ]


def test_privacy_officer_files_an_erasure_by_record_number_sees_deadlines_and_extends(
    console_server: ConsoleServer, browser_client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    patient_id = make_patient(console_server)
    make_patient(console_server, "BN-OTHER-1", family="Khác")
    set_clock(console_server, datetime(2026, 3, 2, 9, 0))  # a Monday
    sign_in(browser_client, "chi.po")

    found = browser_client.get("/console/privacy", params={"mrn": MRN})
    assert found.status_code == 200
    assert f"Patient/{patient_id}" in found.text and "Đỗ Thị Hoa" in found.text and "Khác" not in found.text
    assert "Không có bệnh nhân" not in found.text
    nobody = browser_client.get("/console/privacy", params={"mrn": "BN-NOBODY"})
    assert "Không có bệnh nhân đang hoạt động nào có mã bệnh án này." in nobody.text

    with caplog.at_level(logging.INFO, logger="carebridge.privacy"):
        filed = file_erasure(browser_client, found.text, patient_id)
    assert filed.status_code == 303
    detail_url = filed.headers["location"].split("?")[0]
    request_id = detail_url.rsplit("/", 1)[1]
    line = next(r.getMessage() for r in caplog.records if "privacy request filed" in r.getMessage())
    assert request_id in line and "type=erasure" in line and "due=2026-03-22" in line
    assert MRN not in line and patient_id not in line and "Hoa" not in line  # never patient data

    detail = browser_client.get(detail_url)
    assert detail.status_code == 200
    # acknowledge within 2 working days (Wed 4 March), erase within 20 days (22 March), Vietnam time
    assert re.search(r'data-deadline="acknowledge">04/03/2026 23:59<', detail.text)
    assert re.search(r'data-deadline="complete">22/03/2026 23:59<', detail.text)
    assert 'class="sla sla-on-time"' in detail.text

    queue = browser_client.get("/console/privacy")
    assert f'data-request="{request_id}"' in queue.text and "22/03/2026 23:59" in queue.text
    assert "Đỗ" not in queue.text  # the queue itself shows no patient data

    refused = browser_client.post(
        f"{detail_url}/extend", data={"csrf_token": csrf_of(detail.text), "days": "20", "reason": ""}
    )
    assert refused.status_code == 400 and 'role="alert"' in refused.text
    extended = browser_client.post(
        f"{detail_url}/extend",
        data={"csrf_token": csrf_of(detail.text), "days": "10", "reason": "Cần xác minh với CRM đối tác"},
    )
    assert extended.status_code == 303
    after = browser_client.get(detail_url)
    assert re.search(r'data-deadline="complete">01/04/2026 23:59<', after.text)
    assert "Cần xác minh với CRM đối tác" in after.text
    twice = browser_client.post(
        f"{detail_url}/extend",
        data={"csrf_token": csrf_of(after.text), "days": "5", "reason": "Lần thứ hai không được"},
    )
    assert twice.status_code == 422
    assert "extension" in twice.text  # Decree 356/2025 Art. 5 allows one extension
    assert re.search(r'data-deadline="complete">01/04/2026 23:59<', twice.text)  # unchanged

    events = subtypes(console_server)
    who = "Lê Thị Chi (chi.po)"
    assert any(
        code == "console-view" and agent == who and "record number" in desc for code, agent, desc in events
    )
    steps = [code for code, agent, _ in events if agent == who and code.startswith("privacy")]
    assert steps, events
    assert any("extended" in code for code, agent, _ in events if agent == who)
    assert any("filed" in code for code, agent, _ in events if agent == who)


def test_processing_an_erasure_gives_a_printable_letter_whose_view_is_audited(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    patient_id = make_patient(console_server)
    page = sign_in(browser_client, "chi.po")
    filed = file_erasure(browser_client, page.text, patient_id)
    detail_url = filed.headers["location"].split("?")[0]
    detail = browser_client.get(detail_url)
    ack = browser_client.post(f"{detail_url}/acknowledge", data={"csrf_token": csrf_of(detail.text)})
    assert ack.status_code == 303
    done = browser_client.post(f"{detail_url}/process", data={"csrf_token": csrf_of(detail.text)})
    assert done.status_code == 303, done.text
    processed = browser_client.get(detail_url)
    assert f"{detail_url}/letter" in processed.text
    assert "Xác nhận xoá của CRM" in processed.text  # the receipts section of an erasure
    letter = browser_client.get(f"{detail_url}/letter")
    assert letter.status_code == 200
    assert "Erasure request outcome" in letter.text and "<style>" not in letter.text  # CSP: no inline styles
    views = [desc for code, _, desc in subtypes(console_server) if code == "console-view"]
    assert any(desc.endswith("letter") for desc in views)


def test_near_due_is_logged_once_per_request(
    console_server: ConsoleServer, browser_client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = console_server.server.runtime
    patient_id = make_patient(console_server)
    clock = set_clock(console_server, datetime(2026, 3, 2, 9, 0))
    page = sign_in(browser_client, "chi.po")
    filed = file_erasure(browser_client, page.text, patient_id)
    request_id = filed.headers["location"].split("?")[0].rsplit("/", 1)[1]
    with caplog.at_level(logging.INFO, logger="carebridge.privacy"):
        assert announce_near_due(runtime.engine, runtime.privacy) == 0  # on time
        clock.advance(days=2, hours=1)  # Wed 10:00: the last working day to acknowledge
        assert announce_near_due(runtime.engine, runtime.privacy) == 1
        assert announce_near_due(runtime.engine, runtime.privacy) == 0  # once only
        queue = browser_client.get("/console/privacy", params={"state": "near-due"})  # the listing checks too
    assert f'data-request="{request_id}"' in queue.text and 'class="sla sla-near-due"' in queue.text
    lines = [r.getMessage() for r in caplog.records if "near due" in r.getMessage()]
    assert len(lines) == 1 and request_id in lines[0] and "deadline=acknowledgement" in lines[0]
    assert patient_id not in lines[0]


def test_csrf_and_roles_on_the_privacy_pages(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    patient_id = make_patient(console_server)
    page = sign_in(browser_client, "chi.po")
    filed = file_erasure(browser_client, page.text, patient_id)
    detail_url = filed.headers["location"].split("?")[0]
    forms = {
        "/console/privacy/file": {
            "patient": patient_id,
            "type": "access",
            "reason": "xem dữ liệu",
            "verification": "CCCD",
        },
        f"{detail_url}/acknowledge": {},
        f"{detail_url}/extend": {"days": "5", "reason": "lý do đủ dài"},
        f"{detail_url}/process": {},
        f"{detail_url}/close": {"reason": "lý do đủ dài", "outcome": "rejected"},
    }
    for url, form in forms.items():
        assert browser_client.post(url, data=form).status_code == 403, url
        assert browser_client.post(url, data={**form, "csrf_token": "forged"}).status_code == 403, url
    assert "Đã nhận" in browser_client.get(detail_url).text  # nothing changed
    assert browser_client.get("/console/admin").status_code == 403  # a privacy officer is no admin
    assert browser_client.post(
        "/console/admin/users", data={"csrf_token": csrf_of(page.text)}
    ).status_code in (
        403,
        422,
    )

    with httpx.Client(base_url=console_server.base_url, timeout=30) as other:
        sign_in(other, "binh.cs")  # compliance officer: no privacy queue
        assert other.get("/console/privacy").status_code == 403
        assert other.get(detail_url).status_code == 403
    with httpx.Client(base_url=console_server.base_url, timeout=30) as nobody:
        assert nobody.get("/console/privacy").status_code == 303
        assert nobody.get(f"{detail_url}/letter").status_code == 303
