"""A tiny CRM webhook receiver for the demo: verifies each signature and prints what the CRM sees.

Standard library only (``http.server`` in a thread), so it also shows a CRM
developer how little is needed: verify ``X-Carebridge-Signature`` over the raw
body *before* parsing (docs/crm-integration.md §4), de-duplicate on the event
id (delivery is at-least-once), answer 2xx.  What it prints is exactly what
reaches the CRM: the pseudonymous subject and the allowlisted fields, never a
record number, CCCD or BHYT (carebridge does not send them).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from crm_bridge import SIGNATURE_HEADER, verify_signature


def describe(event: dict[str, Any]) -> str:
    """One line per event: type, a shortened pseudonym and the payload fields the CRM received."""
    subject = str(event.get("subject") or "-")
    short = subject if len(subject) <= 16 else subject[:14] + "…"
    data = dict(event.get("data") or {})
    summary = json.dumps(data, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    if len(summary) > 160:
        summary = summary[:157] + "..."
    return f"seq={event.get('seq')} {event.get('type')} subject={short} {summary}"


class CrmReceiver:
    """``start()`` on a free loopback port, ``url`` to subscribe, ``events`` as received (verified, unique).

    Events are collected, not printed from the server thread, so the demo can
    print them after the ACK lines of the step that caused them.
    """

    def __init__(self) -> None:
        self.secret: bytes | None = None  # set once the subscription answered with it
        self.events: list[dict[str, Any]] = []
        self.rejected = 0
        self._seen: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), name="crm-receiver", daemon=True
        )  # shutdown() waits up to one poll interval (0.5 s by default)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hooks/carebridge"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def accept(self, body: bytes, signature: str) -> int:
        """Check the signature, de-duplicate, print; returns the HTTP status to answer."""
        if self.secret is None or not verify_signature(self.secret, body, signature):
            with self._lock:
                self.rejected += 1
            return 401
        event = json.loads(body)
        with self._lock:
            if str(event.get("id")) in self._seen:
                return 204  # at-least-once delivery: already stored
            self._seen.add(str(event.get("id")))
            self.events.append(event)
        return 204

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                status = receiver.accept(body, self.headers.get(SIGNATURE_HEADER) or "")
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # quiet: the demo prints events
                return

        return Handler
