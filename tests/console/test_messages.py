"""The message browser over HTTP: search, raw HL7 by role, reprocess with a reason, senders, dead letters (#19)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx

from fhir_store import JOURNAL_PROCESSED
from gateway.ingest import Ingestor
from gateway.sender_registry import SenderRegistry
from tests.console.conftest import ConsoleServer, audit_events, csrf_of, sign_in

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "hl7v2"
#: Latin-1 bytes and no MSH-18: refused under the UTF-8 default, applied once the sender's charset is set
LATIN1 = (
    "MSH|^~\\&|HIS_OLD|PK_CU|FHIRGATE|CRM_CSKH|20261119080000||ADT^A04|LAT00001|P|2.5\r"
    "EVN|A04|20261119080000\r"
    "PID|1||000888^^^PK_CU^MR||Lê^Hà||19770101|F\r"
    "PV1|1|O|KHAM\r"
).encode("latin-1")


def feed(console_server: ConsoleServer, raw: bytes) -> tuple[int, str]:
    """Send one message through the ingest (as the MLLP listener would); its journal id and status."""
    runtime = console_server.server.runtime
    outcome = Ingestor(runtime.store, runtime.settings).handle(raw, peer="127.0.0.1:40000")
    assert outcome.journal_id is not None
    return outcome.journal_id, outcome.status


def good_message(console_server: ConsoleServer) -> int:
    journal_id, status = feed(console_server, (FIXTURES / "adt_a04_register_outpatient.hl7").read_bytes())
    assert status == JOURNAL_PROCESSED
    return journal_id


def person_events(console_server: ConsoleServer, subtype: str) -> list[dict[str, Any]]:
    return [e for e in audit_events(console_server) if e.get("subtype", [{}])[0].get("code") == subtype]


def agent(event: dict[str, Any]) -> str:
    return str(event["agent"][0]["who"]["identifier"]["value"])


def patients_of(event: dict[str, Any]) -> set[str]:
    return {
        str(e["what"]["reference"]).removeprefix("Patient/")
        for e in event.get("entity", ())
        if str((e.get("what") or {}).get("reference", "")).startswith("Patient/")
    }


def test_clinician_sees_the_list_but_not_raw_hl7_and_cannot_reprocess(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    journal_id = good_message(console_server)
    page = sign_in(browser_client, "dung.bs")
    listing = browser_client.get("/console/messages")
    assert listing.status_code == 200 and "HIS000001" in listing.text
    assert 'action="/console/messages/reprocess"' not in listing.text  # no reprocess form for the role
    message = browser_client.get(f"/console/messages/{journal_id}")
    assert message.status_code == 200
    assert "PID-5" not in message.text and "Nguyễn" not in message.text  # metadata only
    assert "MSA-1" in message.text  # the ACK is shown
    refused = browser_client.post(
        f"/console/messages/{journal_id}/reprocess", data={"csrf_token": csrf_of(page.text), "reason": "x"}
    )
    assert refused.status_code == 403
    views = person_events(console_server, "console-view")
    assert any(agent(e) == "Phạm Văn Dũng (dung.bs)" and "(metadata)" in e["outcomeDesc"] for e in views)


def test_admin_and_strangers_get_no_message_page(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    journal_id = good_message(console_server)
    for url in ("/console/messages", f"/console/messages/{journal_id}", "/console/senders"):
        response = browser_client.get(url)
        assert response.status_code == 303 and response.headers["location"] == "/console/login", url
    sign_in(browser_client, "em.admin")
    assert browser_client.get("/console/messages").status_code == 403
    assert browser_client.get(f"/console/messages/{journal_id}").status_code == 403  # no raw HL7 for admin
    assert browser_client.get("/console/senders").status_code == 200  # configuration, no patient data


def test_raw_view_is_audited_with_the_patient_and_the_person(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    journal_id = good_message(console_server)
    sign_in(browser_client, "an.op")
    message = browser_client.get(f"/console/messages/{journal_id}")
    assert message.status_code == 200
    assert "PID-5" in message.text and "Patient Name" in message.text and "Nguyễn" in message.text
    patient = re.search(r'href="/fhir/(Patient/[^"/]+)/_history/1"', message.text)
    assert patient is not None  # the resources it created, linked to their versions
    view = [e for e in person_events(console_server, "console-view") if "(raw HL7)" in e["outcomeDesc"]]
    assert len(view) == 1 and agent(view[0]) == "Nguyễn Văn An (an.op)"
    assert patients_of(view[0]) == {patient.group(1).removeprefix("Patient/")}


def test_search_by_control_id_status_sender_type_date_and_record_number(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    good = good_message(console_server)
    refused, status = feed(console_server, LATIN1)
    assert status in ("failed", "rejected")
    sign_in(browser_client, "binh.cs")

    def ids(**params: str) -> list[int]:
        page = browser_client.get("/console/messages", params=params)
        assert page.status_code == 200
        return [int(i) for i in re.findall(r'<tr data-id="(\d+)">', page.text)]

    assert ids() == [refused, good]  # newest first
    assert ids(control_id="LAT00001") == [refused]
    assert ids(status="processed") == [good]
    assert ids(sender="HIS_VN^BVDK_HN") == [good] and ids(sender="HIS_OLD") == [refused]
    assert ids(type="ADT^A04") == [refused, good] and ids(type="SIU") == []
    assert ids(since="2000-01-01", until="2999-12-31") == [refused, good] and ids(until="2000-01-01") == []
    assert ids(patient="BN000123") == [good] and ids(patient="079085001234") == [good]  # MR and CCCD
    assert ids(patient="no-such-number") == []
    by_patient = person_events(console_server, "console-view")
    assert any("by patient identifier" in e["outcomeDesc"] and patients_of(e) for e in by_patient)
    errors = browser_client.get("/console/messages", params={"status": status})
    assert 'class="groups"' in errors.text and "utf-8" in errors.text  # grouped by error text


def test_operator_reprocesses_with_a_reason_after_fixing_the_charset(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    runtime = console_server.server.runtime
    SenderRegistry(runtime.engine).add("HIS_OLD", "PK_CU", networks=["127.0.0.0/8"])
    journal_id, status = feed(console_server, LATIN1)
    assert status != JOURNAL_PROCESSED
    page = sign_in(browser_client, "an.op")
    csrf = csrf_of(page.text)
    url = f"/console/messages/{journal_id}/reprocess"
    assert browser_client.post(url, data={"reason": "no token"}).status_code == 403  # CSRF
    assert browser_client.post(url, data={"csrf_token": csrf, "reason": " "}).status_code == 400
    senders = browser_client.get("/console/senders")
    assert 'data-sender="HIS_OLD^PK_CU"' in senders.text
    set_charset = browser_client.post(
        "/console/senders/charset",
        data={"csrf_token": csrf, "application": "HIS_OLD", "facility": "PK_CU", "charset": "latin-1"},
    )
    assert set_charset.status_code == 303
    assert SenderRegistry(runtime.engine).get("HIS_OLD", "PK_CU").charset == "iso8859-1"  # type: ignore[union-attr]
    done = browser_client.post(url, data={"csrf_token": csrf, "reason": "sender charset fixed"})
    assert done.status_code == 200
    assert f'<tr data-id="{journal_id}">' in done.text and 'data-after="processed"' in done.text
    assert re.search(r'class="resource" href="/fhir/Patient/[^"]+/_history/1"', done.text)
    message = browser_client.get(f"/console/messages/{journal_id}")
    assert 'data-status="processed"' in message.text and "Lê" in message.text
    (event,) = person_events(console_server, "console-reprocess")
    assert agent(event) == "Nguyễn Văn An (an.op)"
    assert f"journal ids {journal_id};" in event["outcomeDesc"]
    assert "reason: sender charset fixed" in event["outcomeDesc"] and "1 processed AA" in event["outcomeDesc"]
    assert patients_of(event)  # the patient it wrote
    (charset_event,) = person_events(console_server, "senders-set-charset")
    assert agent(charset_event) == "Nguyễn Văn An (an.op)"


def test_reprocess_every_message_of_a_search_result(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    runtime = console_server.server.runtime
    SenderRegistry(runtime.engine).add("HIS_OLD", "PK_CU", networks=["127.0.0.0/8"], charset=None)
    first, _ = feed(console_server, LATIN1)
    second, _ = feed(console_server, LATIN1.replace(b"LAT00001", b"LAT00002"))
    good_message(console_server)
    SenderRegistry(runtime.engine).set_charset("HIS_OLD", "PK_CU", "cp1258")
    page = sign_in(browser_client, "an.op")
    listing = browser_client.get("/console/messages", params={"sender": "HIS_OLD"})
    assert 'action="/console/messages/reprocess"' in listing.text
    form = {"csrf_token": csrf_of(page.text), "reason": "bulk after charset fix", "sender": "HIS_OLD"}
    done = browser_client.post("/console/messages/reprocess", data=form)
    assert done.status_code == 200
    assert re.findall(r'<tr data-id="(\d+)">', done.text) == [str(first), str(second)]
    (event,) = person_events(console_server, "console-reprocess")
    assert f"journal ids {first},{second};" in event["outcomeDesc"]


def test_senders_page_edits_are_audited_and_need_the_role(
    console_server: ConsoleServer, browser_client: httpx.Client
) -> None:
    runtime = console_server.server.runtime
    SenderRegistry(runtime.engine).add("HIS_VN", "BVDK_HN", networks=["10.0.0.0/8"])
    page = sign_in(browser_client, "em.admin")
    csrf = csrf_of(page.text)
    form = {"csrf_token": csrf, "application": "HIS_VN", "facility": "BVDK_HN", "charset": "no-such-codec"}
    refused = browser_client.post("/console/senders/charset", data=form, follow_redirects=True)
    assert "unknown character set" in refused.text
    off = {"csrf_token": csrf, "application": "HIS_VN", "facility": "BVDK_HN", "enabled": "false"}
    assert browser_client.post("/console/senders/enabled", data=off).status_code == 303
    assert SenderRegistry(runtime.engine).get("HIS_VN", "BVDK_HN").enabled is False  # type: ignore[union-attr]
    assert [agent(e) for e in person_events(console_server, "senders-disable")] == ["Hoàng Em (em.admin)"]
    assert [e["outcome"] for e in person_events(console_server, "senders-set-charset")] != ["0"]
    browser_client.cookies.clear()
    clinician = sign_in(browser_client, "dung.bs")
    assert browser_client.get("/console/senders").status_code == 403
    form["csrf_token"] = csrf_of(clinician.text)
    assert browser_client.post("/console/senders/charset", data=form).status_code == 403


def test_dead_letters_page_and_redeliver(console_server: ConsoleServer, browser_client: httpx.Client) -> None:
    page = sign_in(browser_client, "an.op")
    listing = browser_client.get("/console/dead-letters")
    assert listing.status_code == 200 and 'class="dead-letters"' in listing.text
    form = {"csrf_token": csrf_of(page.text), "crm": "no-crm", "subscription": "no-sub"}
    assert browser_client.post("/console/dead-letters/redeliver", data=form).status_code == 303
    (event,) = person_events(console_server, "crm-redeliver")
    assert agent(event) == "Nguyễn Văn An (an.op)" and event["outcome"] != "0"
    browser_client.cookies.clear()
    sign_in(browser_client, "dung.bs")
    assert browser_client.get("/console/dead-letters").status_code == 403
