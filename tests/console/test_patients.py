"""The compliance officer's patient pages: lookup by record number, consents, accesses, exports (issue #19)."""

from __future__ import annotations

import csv
import io
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from openpyxl import load_workbook

from consent import APPOINTMENT_REMINDER, build_consent
from fhir_store import format_instant, now_us
from gateway.console.i18n import local_time
from gateway.ingest import Ingestor
from tests.console.conftest import ConsoleServer, audit_events, sign_in

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hl7v2"
A04 = (FIXTURES / "adt_a04_register_outpatient.hl7").read_bytes()
OFFICER = "Trần Thị Bình (binh.cs)"


def ingest_and_read(console_server: ConsoleServer) -> tuple[str, list[str]]:
    """A04 through the ingest, then REST reads by two clients stating their purpose; returns ids."""
    live = console_server.server
    runtime = live.runtime
    assert Ingestor(runtime.store, runtime.settings).handle(A04).ack_code == "AA"
    found = httpx.get(f"{live.fhir_url}/Patient", params={"identifier": "BN000123"}, headers=live.headers)
    patient_id = str(found.json()["entry"][0]["resource"]["id"])
    consent = build_consent(
        patient_id,
        APPOINTMENT_REMINDER,
        permit=True,
        date_time=format_instant(now_us() - 3_600_000_000),
        channel="counter",
        text_version="v1",
        text_shown="Tôi đồng ý nhận nhắc lịch hẹn.",
        recipient="crm-main",
        recorded_by="Lễ tân Hà",
    )
    assert httpx.post(f"{live.fhir_url}/Consent", json=consent, headers=live.headers).status_code == 201
    clients = []
    for role, purpose in (("clinician", "TREAT"), ("his_integration", "HOPERAT")):
        headers = {**live.auth(role), "X-Purpose-Of-Use": purpose}
        read = httpx.get(f"{live.fhir_url}/Patient/{patient_id}", headers=headers)
        assert read.status_code == 200, read.text
        clients.append(role)
    return patient_id, clients


def _events_of(console_server: ConsoleServer, subtype: str, patient_id: str) -> list[dict[str, Any]]:
    return [
        e
        for e in audit_events(console_server)
        if (e.get("subtype") or [{}])[0].get("code") == subtype
        and any(x.get("what", {}).get("reference") == f"Patient/{patient_id}" for x in e.get("entity", []))
    ]


def test_officer_finds_the_patient_by_record_number_and_sees_who_accessed_it(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    patient_id, _ = ingest_and_read(console_server)
    assert sign_in(browser_client, "binh.cs").status_code == 200

    lookup = browser_client.get("/console/patients", params={"q": "BN000123"})
    assert lookup.status_code == 200
    assert f'href="/console/patients/{patient_id}"' in lookup.text
    assert "BN000123" in lookup.text and "1985" in lookup.text
    by_name = browser_client.get("/console/patients", params={"q": "Văn An"})
    assert f"/console/patients/{patient_id}" in by_name.text
    by_cccd = browser_client.get("/console/patients", params={"q": "079085001234"})
    assert f"/console/patients/{patient_id}" in by_cccd.text
    nobody = browser_client.get("/console/patients", params={"q": "BN999999"})
    assert "/console/patients/" not in nobody.text.replace('action="/console/patients"', "")

    page = browser_client.get(f"/console/patients/{patient_id}")
    assert page.status_code == 200
    accesses = page.text.split('id="accesses"', 1)[1]
    reads = [
        e
        for e in audit_events(console_server)
        if (e.get("subtype") or [{}])[0].get("code") == "read"
        and e["agent"][0]["role"][0]["coding"][0]["code"] in ("clinician", "his_integration")
    ]
    assert len(reads) == 2
    for event in reads:
        who = event["agent"][0]["altId"]
        assert who in accesses  # the client id
        recorded = event["recorded"]
        moment = datetime.fromisoformat(recorded.replace("Z", "+00:00"))
        assert local_time(int(moment.timestamp() * 1_000_000)) in accesses  # Vietnam time
    assert "Điều trị" in accesses and "Vận hành cơ sở y tế" in accesses  # purposes of use, in words
    assert "Thành công" in accesses and "Xem" in accesses
    consents = page.text.split('id="consents"', 1)[1].split("</table>", 1)[0]
    assert "Đồng ý" in consents and "Nhắc lịch hẹn" in consents and "crm-main" in consents
    assert "Tại quầy" in consents and "Lễ tân Hà" in consents

    # the officer's own lookup is an access too, named: a second view lists it
    again = browser_client.get(f"/console/patients/{patient_id}").text.split('id="accesses"', 1)[1]
    assert OFFICER in again and "Cán bộ tuân thủ" in again

    printable = browser_client.get(f"/console/patients/{patient_id}/print")
    assert printable.status_code == 200 and "Trần Thị Bình" in printable.text

    views = _events_of(console_server, "console-view", patient_id)
    assert len(views) >= 6  # lookups by number, name and CCCD, page twice, printable
    assert all(v["agent"][0]["altId"] == OFFICER for v in views)
    assert all("BN000123" not in str(v) and "079085001234" not in str(v) for v in views)


def test_exports_are_readable_and_audited(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    patient_id, _ = ingest_and_read(console_server)
    sign_in(browser_client, "binh.cs")

    exported = browser_client.get(f"/console/patients/{patient_id}/accesses.csv")
    assert exported.status_code == 200 and exported.headers["content-type"].startswith("text/csv")
    assert exported.content.startswith(b"\xef\xbb\xbf")  # a spreadsheet reads it as UTF-8
    rows = list(csv.reader(io.StringIO(exported.content.decode("utf-8-sig"))))
    assert rows[0] == [
        "Thời gian (giờ Việt Nam)",
        "Người truy cập",
        "Vai trò",
        "Mục đích sử dụng",
        "Hành động",
        "Thao tác",
        "Kết quả",
    ]
    assert all(re.fullmatch(r"\d\d/\d\d/\d{4} \d\d:\d\d", row[0]) for row in rows[1:])
    assert any(row[3] == "Điều trị" for row in rows[1:])

    workbook = browser_client.get(f"/console/patients/{patient_id}/accesses.xlsx")
    assert workbook.status_code == 200
    book = load_workbook(io.BytesIO(workbook.content))
    assert book.sheetnames == ["Truy cập", "Chia sẻ", "Đồng ý"]
    sheet = book["Truy cập"]
    assert [c.value for c in sheet[1]][:2] == ["Thời gian (giờ Việt Nam)", "Người truy cập"]
    assert sheet.max_row == len(rows) + 1  # the CSV export is an access too
    assert [c.value for c in book["Đồng ý"][2]][1] == "Đồng ý"

    exports = _events_of(console_server, "console-export", patient_id)
    assert len(exports) == 2 and all(e["agent"][0]["altId"] == OFFICER for e in exports)
    assert all(e["type"]["code"] == "110106" for e in exports)


@pytest.mark.parametrize("username", ["em.admin", "dung.bs", "an.op"])
def test_roles_without_patient_pages_get_403(
    console_server: ConsoleServer, browser_client: httpx.Client, username: str
) -> None:
    patient_id, _ = ingest_and_read(console_server)
    sign_in(browser_client, username)
    for path in (
        "/console/patients?q=BN000123",
        f"/console/patients/{patient_id}",
        f"/console/patients/{patient_id}/accesses.csv",
        f"/console/patients/{patient_id}/print",
    ):
        refused = browser_client.get(path)
        assert refused.status_code == 403, path
        assert "BN000123" not in refused.text and "1985" not in refused.text, path
    assert _events_of(console_server, "console-view", patient_id) == []


def test_no_session_no_patient_page(console_server: ConsoleServer, browser_client: httpx.Client) -> None:
    for path in ("/console/patients?q=BN000123", "/console/patients/x", "/console/patients/x/accesses.xlsx"):
        response = browser_client.get(path)
        assert response.status_code == 303 and response.headers["location"] == "/console/login"


def test_unknown_patient_is_404(console_server: ConsoleServer, browser_client: httpx.Client) -> None:
    sign_in(browser_client, "binh.cs")
    assert browser_client.get("/console/patients/no-such-id").status_code == 404
