"""A live carebridge with a configured CRM, a real webhook receiver on loopback, and a payload scan.

Every payload a test's CRM receives (webhook bodies and change-feed pages) is
scanned at teardown for record numbers, CCCD, BHYT, diagnoses and addresses
used by the fixtures: the scan covers every payload sent to the CRM in the
suite (issue #5 "must show").
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from consent.purposes import build_consent
from crm_bridge.delivery import SIGNATURE_HEADER
from fhir_store import format_instant, now_us
from tests.http.live import LiveServer, serve
from tests.support import TEST_SECRET_LOG2N

CRM_ID = "crm-main"
MRN_SYSTEM = "https://id.carebridge.vn/mrn/BVDK_HN"
PROJECTION = {
    "clients": {
        CRM_ID: {
            "purposes": ["appointment-reminder", "post-visit-care"],
            "fields": {
                "patient": ["pseudonym", "display_name", "gender", "birth_year", "phone", "zalo"],
                "appointment": ["appointment_id", "start", "end", "status", "service"],
                "encounter": ["completed_at", "service_type"],
            },
        }
    }
}
# Values the fixtures put into the store that must never reach the CRM.
FORBIDDEN = [
    re.compile(r"BN\d{6}"),  # record numbers
    re.compile(r"[A-Z]{2}\d{13}"),  # BHYT (15 characters)
    re.compile(r"K02\.1|Sâu răng", re.I),  # diagnosis
    re.compile(r"Lý Thường Kiệt|Hoàn Kiếm|100000"),  # address
    re.compile(r'"(identifier|address|diagnosis|reasonCode|birthDate)"'),
]
FORBIDDEN_VALUES: set[str] = set()  # exact CCCD/BHYT/record numbers the fixtures stored
ALL_PAYLOADS: list[bytes] = []
# ``serve_forever`` looks for shutdown() once per poll interval, 0.5 s by default: a receiver is
# stopped at every test's teardown and in the outage tests.
SHUTDOWN_POLL_S = 0.02


def scan(payload: bytes) -> None:
    text = payload.decode()
    for pattern in FORBIDDEN:
        assert not pattern.search(text), f"forbidden content {pattern.pattern!r} in a CRM payload"
    for value in FORBIDDEN_VALUES:
        assert value not in text, "a direct identifier reached the CRM"


@dataclass
class Receiver:
    """A real HTTP webhook receiver; ``stop()``/``start()`` simulate an outage on the same port."""

    port: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status: int = 200
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                ALL_PAYLOADS.append(body)
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, args=(SHUTDOWN_POLL_S,), daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for headers, body in self.received if self.status == 200]

    def signature(self, index: int) -> str:
        return self.received[index][0][SIGNATURE_HEADER.lower()]


@contextmanager
def serve_crm(
    database_url: str,
    tmp: Path,
    *,
    store_key_file: str | None = None,
    config: dict[str, Any] | None = None,
    **extra: str,
) -> Iterator[LiveServer]:
    projection = tmp / "crm_projection.yaml"
    projection.write_text(json.dumps(config or PROJECTION))  # JSON is YAML
    settings_extra = {
        "crm_projection_file": str(projection),
        "crm_key_file": str(tmp / "crm-keys.json"),
        "crm_webhook_backoff_base_s": "0.05",
        "crm_webhook_backoff_max_s": "0.3",
        "crm_webhook_max_attempts": "1000",
        # the receivers of these tests listen on loopback over plain http: allowed explicitly
        "crm_allow_http_webhooks": "true",
        "crm_webhook_allowed_networks": "127.0.0.0/8",
        **extra,
    }
    keys = {"store_key_file": store_key_file} if store_key_file else {}
    with serve(database_url, **settings_extra, **keys) as live:
        yield live


@pytest.fixture
def crm_live(database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    with serve_crm(database_url, tmp_path) as live:
        yield live


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    yield r
    r.stop()
    for _headers, body in r.received:
        scan(body)


class CrmClient:
    """The CRM side: a real token of role ``crm`` for client id ``crm-main`` (or ``crm_id``).

    Registering the client starts its feed (``crm_bridge.feed_start``): it reads what is
    written from then on.
    """

    def __init__(self, live: LiveServer, crm_id: str = CRM_ID) -> None:
        from gateway.auth.clients import ClientRegistry

        secret = ClientRegistry(live.runtime.engine, secret_log2n=TEST_SECRET_LOG2N).add(crm_id, "crm") or ""
        token = httpx.post(
            f"{live.base_url}/auth/token",
            data={"grant_type": "client_credentials", "client_id": crm_id, "client_secret": secret},
        ).json()["access_token"]
        self.http = httpx.Client(
            base_url=f"{live.base_url}/crm/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def feed(self, cursor: int = 0) -> list[dict[str, Any]]:
        response = self.http.get("/changes", params={"cursor": cursor, "limit": 1000})
        response.raise_for_status()
        scan(response.content)
        ALL_PAYLOADS.append(response.content)
        events: list[dict[str, Any]] = response.json()["events"]
        return events


@pytest.fixture
def crm(crm_live: LiveServer) -> Iterator[CrmClient]:
    client = CrmClient(crm_live)
    yield client
    client.http.close()


# -- FHIR helpers ------------------------------------------------------------------------


def his(live: LiveServer) -> httpx.Client:
    return httpx.Client(
        base_url=live.fhir_url, headers={**live.headers, "Content-Type": "application/fhir+json"}, timeout=30
    )


def full_patient(mrn: str | None = None, **extra: Any) -> dict[str, Any]:
    mrn = mrn or f"BN{uuid.uuid4().int % 1_000_000:06d}"
    cccd, bhyt = f"0{uuid.uuid4().int % 10**11:011d}", f"DN{uuid.uuid4().int % 10**13:013d}"
    FORBIDDEN_VALUES.update({mrn, cccd, bhyt})
    body: dict[str, Any] = {
        "resourceType": "Patient",
        "identifier": [
            {"system": MRN_SYSTEM, "value": mrn},
            {"system": "https://id.carebridge.vn/cccd", "value": cccd},
            {"system": "https://id.carebridge.vn/bhyt", "value": bhyt},
        ],
        "name": [{"use": "official", "family": "Nguyễn", "given": ["Văn", "An"], "text": "Nguyễn Văn An"}],
        "telecom": [
            {"system": "phone", "value": "+84912345678"},
            {"system": "email", "value": "an@example.vn"},
        ],
        "gender": "male",
        "birthDate": "1985-03-12",
        "address": [{"text": "12 Lý Thường Kiệt, Phường Hoàn Kiếm, Hà Nội", "postalCode": "100000"}],
    }
    body.update(extra)
    return body


def appointment(
    patient_id: str, status: str = "booked", start: str = "2026-12-01T09:00:00+07:00"
) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "status": status,
        "serviceType": [{"coding": [{"code": "NIENG", "display": "Niềng răng - tái khám"}]}],
        "reasonCode": [
            {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10", "code": "K02.1"}], "text": "Sâu răng"}
        ],
        "start": start,
        "end": start.replace("09:00", "09:30"),
        "participant": [{"actor": {"reference": f"Patient/{patient_id}"}, "status": "accepted"}],
    }


def encounter(patient_id: str, status: str = "finished", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": "Encounter",
        "status": status,
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient_id}"},
        "serviceType": {"coding": [{"code": "NHA", "display": "Nha khoa"}]},
        "reasonCode": [{"text": "Sâu răng K02.1"}],
        "period": {"start": "2026-11-20T08:30:00+07:00", "end": "2026-11-20T10:15:00+07:00"},
    }
    body.update(extra)
    return body


def counter_consent(
    patient_id: str,
    purpose: str,
    *,
    permit: bool = True,
    date_time: str | None = None,
    channel: str = "counter",
) -> dict[str, Any]:
    """A Consent for ``CRM_ID`` as a front desk records it (shown text and its version included).

    Dated two hours ago by default: a grant more than 24 h old is refused (``consent.grants``).
    """
    return build_consent(
        patient_id,
        purpose,
        permit=permit,
        date_time=date_time or recent(2),
        channel=channel,
        text_version="v3",
        text_shown="Tôi đồng ý.",
        recipient=CRM_ID,
    )


def recent(hours_ago: float) -> str:
    """An instant ``hours_ago`` before now (grants must be dated within the last 24 h)."""
    return format_instant(now_us() - int(hours_ago * 3600 * 1_000_000))


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
