"""No patient data in the logs (ISO/IEC 27001:2022 A.8.12, Decree 356/2025 Art. 7).

The end-to-end test runs the real ``carebridge serve`` (SQLite, DEBUG level)
as a subprocess, sends every HL7 sample with ``carebridge hl7 send`` (good and
bad: error paths are where input tends to leak into messages), makes REST
calls with real tokens (create, read, search by name and phone, invalid input,
403, 401, an audit query), stops the server and scans *every* line it wrote:
each must be a JSON object, request lines must carry a ``request_id``, HL7
lines a journal or control id, and no line may contain a name (with or
without diacritics), phone, CCCD, BHYT number, street or e-mail of the samples.

The forbidden strings are extracted from the samples themselves (PID, NK1,
EVN, PV1, AIP...), so a new sample is covered without editing this file, plus
the values of the REST calls and a fixed list of the well-known ones.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.logging_setup import drop_patient_data
from tests.support import TEST_SECRET_LOG2N
from tests.support.settings import OPEN_MLLP_ENV

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "hl7v2"
CAREBRIDGE = str(Path(sys.executable).with_name("carebridge"))
FHIR_JSON = "application/fhir+json"

# The well-known sample values (the extraction below finds these and more).
KNOWN = [
    "Nguyễn",
    "Nguyen Van An",
    "Nguyễn Văn An",
    "Võ Ánh Ngọc",
    "Vo Anh Ngoc",
    "Lê Hà",
    "Le Ha Thu",
    "0912345678",
    "+84912345678",
    "84912345678",
    "0903111222",
    "079085001234",
    "001190012345",
    "DN4797912345678",
    "Lý Thường Kiệt",
    "Ly Thuong Kiet",
    "Nguyễn Trãi",
    "an.nguyen@example.vn",
]
# Fields holding person names, addresses and contacts, by segment (1-based field numbers).
_NAME_FIELDS = {"PID": (5, 6, 9), "NK1": (2,), "EVN": (5,), "PV1": (7, 8, 9, 17), "AIP": (3,), "GT1": (3,)}
_ADDRESS_FIELDS = {"PID": (11,), "NK1": (4,), "GT1": (5,)}
_CONTACT_FIELDS = {"PID": (13, 14), "NK1": (5, 6), "GT1": (6, 7)}


def fold(text: str) -> str:
    """Vietnamese without diacritics (what a careless ASCII log would contain)."""
    text = text.replace("đ", "d").replace("Đ", "D")
    return "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))


def _fields(raw: str) -> Iterator[tuple[str, int, str]]:
    for segment in re.split(r"[\r\n]+", raw):
        parts = segment.split("|")
        if len(parts[0]) != 3:
            continue
        for number, value in enumerate(parts[1:], start=1):
            yield parts[0], number, value


def sample_phi() -> set[str]:
    """Names, streets, phones, e-mails and national/insurance ids found in the HL7 samples."""
    found: set[str] = set(KNOWN)
    for path in FIXTURES.glob("*.hl7"):
        raw = path.read_bytes().decode("utf-8", errors="replace")
        for segment, number, value in _fields(raw):
            for repetition in value.split("~"):
                comps = [c for c in repetition.split("^") if c.strip()]
                if number in _NAME_FIELDS.get(segment, ()):
                    words = [c for c in comps if not c.isdigit() and not c.isupper() and len(c) > 1]
                    if len(words) >= 2:
                        found.add(" ".join(words))
                        found.add(fold(" ".join(words)))
                    found.update(w for w in words if not w.isascii() and len(w) >= 3)
                elif number in _ADDRESS_FIELDS.get(segment, ()) and comps:
                    street = re.sub(r"^\d+[A-Za-z/]*\s+", "", comps[0])
                    if len(street) >= 5:
                        found.update({comps[0], street, fold(street)})
                elif number in _CONTACT_FIELDS.get(segment, ()):
                    for comp in comps:
                        if "@" in comp:
                            found.add(comp)
                        digits = re.sub(r"\D", "", comp)
                        if len(digits) >= 9:
                            found.add(digits)
                            if digits.startswith("0"):
                                found.add("84" + digits[1:])
        found.update(re.findall(r"\b\d{12}\b", raw))  # CCCD
        found.update(re.findall(r"\b[A-Z]{2}\d{13}\b", raw))  # BHYT
    return found


def forbidden_pattern(values: set[str]) -> re.Pattern[str]:
    alternatives = sorted({v for v in values if v.strip()}, key=len, reverse=True)
    return re.compile(r"(?<!\w)(?:" + "|".join(re.escape(v) for v in alternatives) + r")(?!\w)")


# ------------------------------------------------------------------------------ in-process


def test_drop_patient_data_processor() -> None:
    event: dict[str, Any] = {
        "event": "patient 0912345678 called from +84912345678",
        "name": "Nguyễn Văn An",
        "Phone": "0903111222",
        "address": "12 Lý Thường Kiệt",
        "note": "CCCD 079085001234, BHYT DN4797912345678",
        "request_id": "abc123",
        "count": 3,
    }
    out = drop_patient_data(None, "info", dict(event))
    rendered = json.dumps(out, ensure_ascii=False)
    for value in (
        "0912345678",
        "84912345678",
        "0903111222",
        "Nguyễn",
        "Lý Thường",
        "079085001234",
        "DN47979",
    ):
        assert value not in rendered
    assert out["request_id"] == "abc123" and out["count"] == 3  # ids and numbers survive
    assert out["name"] == "[redacted]" and out["Phone"] == "[redacted]"


def test_sample_extraction_finds_the_known_values() -> None:
    phi = sample_phi()
    assert {"Nguyễn", "079085001234", "DN4797912345678", "0912345678", "an.nguyen@example.vn"} <= phi
    pattern = forbidden_pattern(phi)
    assert pattern.search('{"x": "Nguyen Van An"}') and not pattern.search('{"event": "Transaction ok"}')


# ------------------------------------------------------------------------------ end to end


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    def __init__(self, tmp: Path) -> None:
        self.db = f"sqlite:///{tmp / 'carebridge.db'}"
        self.http_port = _free_port()
        self.log_path = tmp / "serve.log"
        self._log = self.log_path.open("wb")
        env = {**os.environ, **OPEN_MLLP_ENV, "CAREBRIDGE_LOG_LEVEL": "DEBUG", "PYTHONUNBUFFERED": "1"}
        env.pop("CAREBRIDGE_DATABASE_URL", None)
        self.proc = subprocess.Popen(
            [
                CAREBRIDGE,
                "serve",
                "--http-port",
                str(self.http_port),
                "--mllp-port",
                "0",
                "--database-url",
                self.db,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(tmp),
        )
        self.mllp_port = self._wait()
        self.base = f"http://127.0.0.1:{self.http_port}"

    def _wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_path.read_bytes().splitlines():
                if b"carebridge started" in line:
                    return int(json.loads(line)["mllp_port"])
            if self.proc.poll() is not None:
                raise RuntimeError(self.log_path.read_text(errors="replace")[-2000:])
            time.sleep(0.05)
        raise RuntimeError("carebridge serve did not start")

    def token(self, role: str) -> dict[str, str]:
        from fhir_store.database import make_engine
        from gateway.auth.clients import ClientRegistry

        engine = make_engine(self.db, pool_size=1)
        try:
            client_id = f"{role}-phi"
            secret = ClientRegistry(engine, secret_log2n=TEST_SECRET_LOG2N).add(client_id, role, None)
        finally:
            engine.dispose()
        form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret or ""}
        response = httpx.post(f"{self.base}/auth/token", data=form, timeout=30)
        response.raise_for_status()
        return {"Authorization": f"Bearer {response.json()['access_token']}", "Accept": FHIR_JSON}

    def stop(self) -> list[str]:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path)
    try:
        yield running
    finally:
        running.stop()


REST_PATIENT = {
    "resourceType": "Patient",
    "identifier": [
        {"system": "https://id.carebridge.vn/mrn/BVDK_HN", "value": "LOGTEST-1"},
        {"system": "https://id.carebridge.vn/cccd", "value": "079190045678"},
    ],
    "name": [{"family": "Võ", "given": ["Ánh", "Ngọc"], "text": "Võ Ánh Ngọc"}],
    "telecom": [
        {"system": "phone", "value": "0903111222"},
        {"system": "email", "value": "ngoc.vo@example.vn"},
    ],
    "address": [{"line": ["25 Nguyễn Trãi"], "city": "Hà Nội"}],
    "gender": "female",
    "birthDate": "1990-01-19",
}


def _rest_calls(server: Server) -> list[httpx.Response]:
    his = server.token("his_integration")
    clinician = server.token("clinician")
    auditor = server.token("compliance_officer")
    fhir = f"{server.base}/fhir"
    out: list[httpx.Response] = []
    with httpx.Client(timeout=30) as http:
        post = {**his, "Content-Type": FHIR_JSON}
        created = http.post(f"{fhir}/Patient", json=REST_PATIENT, headers=post)
        assert created.status_code == 201, created.text
        pid = created.json()["id"]
        out.append(created)
        out.append(http.get(f"{fhir}/Patient/{pid}", headers=clinician))
        out.append(http.get(f"{fhir}/Patient", params={"name": "Võ Ánh Ngọc"}, headers=clinician))
        out.append(http.get(f"{fhir}/Patient", params={"telecom": "0903111222"}, headers=clinician))
        out.append(http.get(f"{fhir}/Patient", params={"identifier": "079190045678"}, headers=clinician))
        # invalid input that quotes patient data back at the caller
        bad = {**REST_PATIENT, "birthDate": "Nguyễn Văn An 0912345678"}
        out.append(http.post(f"{fhir}/Patient", json=bad, headers=post))
        out.append(http.post(f"{fhir}/Patient", content="{not json Lý Thường Kiệt", headers=post))
        out.append(http.get(f"{fhir}/Patient", params={"nmae": "Nguyễn"}, headers=clinician))
        out.append(
            http.post(f"{fhir}/Patient", json=REST_PATIENT, headers={**clinician, "Content-Type": FHIR_JSON})
        )
        out.append(http.get(f"{fhir}/Patient", params={"name": "Nguyễn"}))  # 401
        out.append(
            http.get(f"{fhir}/Patient", params={"name": "Nguyễn"}, headers={"Authorization": "Bearer x"})
        )
        out.append(http.get(f"{fhir}/AuditEvent", params={"patient": pid}, headers=auditor))
        out.append(http.get(f"{fhir}/AuditEvent", params={"patient": pid}, headers=clinician))
    statuses = [r.status_code for r in out]
    assert statuses == [201, 200, 200, 200, 200, 400, 400, 400, 403, 401, 401, 200, 403], statuses
    return out


@pytest.mark.slow
def test_no_patient_data_in_any_log_line(server: Server) -> None:
    files = sorted(str(p) for p in FIXTURES.glob("*.hl7"))
    good_first = sorted(files, key=lambda f: (Path(f).name.startswith("bad_"), "a40" in f, f))
    sent = subprocess.run(
        [CAREBRIDGE, "hl7", "send", "--host", "127.0.0.1", "--port", str(server.mllp_port), *good_first],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sent.returncode == 0, sent.stderr
    assert len(sent.stdout.splitlines()) == len(files)
    responses = _rest_calls(server)
    lines = server.stop()

    phi = sample_phi() | {
        "Võ Ánh Ngọc",
        "Vo Anh Ngoc",
        "ngoc.vo@example.vn",
        "Nguyễn Trãi",
        "Nguyen Trai",
        "079190045678",
    }
    pattern = forbidden_pattern(phi)
    events: list[dict[str, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            pytest.fail(f"log line {number} is not JSON: {line[:200]!r}")
        assert isinstance(event, dict) and "event" in event and "level" in event, line[:200]
        leak = pattern.search(line) or pattern.search(json.dumps(event, ensure_ascii=False))
        assert leak is None, f"log line {number} contains patient data {leak.group(0)!r}: {line[:300]}"
        events.append(event)

    assert len(events) > 10
    assert any(e["level"] == "debug" for e in events)  # DEBUG really was on
    assert sum(1 for e in events if str(e["event"]).startswith("hl7 message")) >= 4  # the bad samples
    summary = [e for e in events if e["event"] == "hl7 message"]  # one INFO line per message (#19 item 3)
    assert len(summary) == len(files)
    for answered in summary:
        assert answered["level"] == "info" and answered["ack_code"] in ("AA", "AE", "AR"), answered
        assert {"journal_id", "sender", "message_type", "status", "ms"} <= set(answered), answered
    assert {answered["ack_code"] for answered in summary} >= {"AA", "AE"}
    for event in events:
        name = str(event["event"])
        if name.startswith("hl7 "):  # every message line names the message, never its content
            assert {"journal_id", "control_id"} & set(event), event
        elif name.startswith("mllp ") and name not in ("mllp listening", "mllp stopped"):
            assert "peer" in event, event
        elif name == "request failed":
            assert event.get("request_id"), event
    # lines written while a request was being served carry its id (bound by the middleware)
    request_ids = {r.headers["x-request-id"] for r in responses}
    for event in events:
        if event.get("request_id") is not None:
            assert isinstance(event["request_id"], str)
    assert all(len(rid) >= 8 for rid in request_ids)
