"""CRM → HIS booking: a ``proposed`` Appointment, an SIU^S12 through an outbox, the HIS ACK decides.

Why: the CRM never learns the record number (Decree 356/2025 Art. 7), so it
books with its pseudonym; carebridge resolves it through the link table and
sends the HIS the minimal Patient (record number only).  The request is
written to ``crm_his_outbox`` in the same transaction as the Appointment so a
crash between "accepted" and "sent" loses nothing; the sender retries with
backoff until the HIS answers.  The ACK must acknowledge *our* message
(MSA-2 = our MSH-10) before it changes anything: an ACK for another message
is treated as no answer.  AA/CA → ``booked`` (the outbox hook then emits
``appointment.booked``); AE/AR → ``cancelled`` and an ``appointment.rejected``
event to the requesting CRM carrying a category and the HL7 error code, never
the HIS's text (``crm_bridge.rejection``).

The stored SIU^S12 is sealed (AES-GCM, CRM field key) because it carries the
record number; the HIS's answer text (``last_error``: an ERR may name the
patient) is sealed under the store content key (``crm_bridge.schema``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, insert, select, update

from common import CrmSettings, InvalidInput, NotFound
from consent import KeyStore
from crm_bridge.outbox import PendingEvent, append_events, resolve_pseudonym
from crm_bridge.rejection import error_code, rejection_reason, unreachable_reason
from crm_bridge.schema import HIS_LAST_ERROR, crm_his_outbox
from crm_bridge.worker_loop import WorkerLoop, backoff_s
from fhir_store import (
    Create,
    FhirStore,
    OperationResult,
    RequestContext,
    Update,
    for_reading,
    for_writing,
    now_us,
)

log = logging.getLogger("carebridge.crm.booking")
MRN_PREFIX = "https://id.carebridge.vn/mrn/"


@dataclass(frozen=True)
class HisAnswer:
    code: str  # MSA-1
    control_id: str  # MSA-2
    text: str  # the HIS's reason on AE/AR (kept sealed for the clinic; never sent to the CRM)
    error_code: str | None = None  # ERR-3.1, HL7 table 0357 (what the CRM is told)


class HisTransport(Protocol):
    """Sends one HL7 message to the HIS and returns its final ACK (None: no answer).

    Injected by the gateway (MLLP client) so this package does not depend on it.
    """

    def __call__(self, endpoint: tuple[str, int], message: bytes, timeout: float) -> HisAnswer | None: ...


SiuBuilder = Callable[..., bytes]


def _minimal_patient(patient: dict[str, Any]) -> dict[str, Any]:
    """What the HIS needs to book: the record number, nothing else."""
    return {
        "identifier": [
            i for i in patient.get("identifier") or [] if str(i.get("system", "")).startswith(MRN_PREFIX)
        ]
    }


class Booking:
    def __init__(
        self,
        store: FhirStore,
        keys: KeyStore,
        settings: CrmSettings,
        *,
        transport: HisTransport,
        build_siu: SiuBuilder,
    ) -> None:
        self.store = store
        self.transport = transport
        self.build_siu = build_siu
        self.keys = keys
        self.settings = settings
        self._loop = WorkerLoop(
            "crm-his-sender",
            self.run_once,
            idle_wait_s=lambda: self.settings.poll_interval_s * 4,
            log=log,
            failure_message="HIS booking round failed: %s",
        )
        self.wake = self._loop.wake  # set when a booking is queued

    # -- request ------------------------------------------------------------------

    def request(
        self, crm_id: str, body: dict[str, Any], context: RequestContext, idempotency_key: str | None
    ) -> dict[str, Any]:
        pseudonym = str(body.get("subject") or "")
        slot = body.get("slot") or {}
        start, end = slot.get("start"), slot.get("end")
        service = body.get("service") or {}
        if not pseudonym or not start or not end or not service.get("code"):
            raise InvalidInput("subject, slot.start, slot.end and service.code are required", location="body")
        key = idempotency_key or str(uuid.uuid4())
        with self.store.engine.connect() as conn:
            existing = conn.execute(
                select(crm_his_outbox.c.appointment_id, crm_his_outbox.c.status).where(
                    crm_his_outbox.c.crm_id == crm_id, crm_his_outbox.c.idempotency_key == key
                )
            ).first()
            if existing is not None:
                return {"appointment_id": existing[0], "status": existing[1], "idempotency_key": key}
            patient_id = resolve_pseudonym(conn, crm_id, pseudonym)
        if patient_id is None:
            raise NotFound("unknown pseudonym for this CRM", location="subject")
        appointment = {
            "resourceType": "Appointment",
            "status": "proposed",
            "serviceType": [
                {
                    "coding": [
                        {
                            "code": str(service["code"]),
                            **({"display": str(service["display"])} if service.get("display") else {}),
                        }
                    ]
                }
            ],
            "start": start,
            "end": end,
            "participant": [
                {"actor": {"reference": f"Patient/{patient_id}", "type": "Patient"}, "status": "needs-action"}
            ],
        }
        control_id = f"CRM{uuid.uuid4().hex[:16].upper()}"

        def enqueue(conn: Connection, results: list[OperationResult]) -> None:
            stored = results[0].stored
            assert stored is not None
            patient = self.store.load_many(conn, "Patient", [patient_id])
            message = self.build_siu(
                {**appointment, "id": stored.id},
                _minimal_patient(patient[0].resource() if patient else {}),
                sending_app=self.settings.sending_app,
                sending_facility=self.settings.sending_facility,
                receiving_app=self.settings.receiving_app,
                receiving_facility=self.settings.receiving_facility,
                control_id=control_id,
                now=datetime.now(UTC),
            )
            kid, sealed = self.keys.cipher.seal(message, control_id.encode())
            conn.execute(
                insert(crm_his_outbox).values(
                    crm_id=crm_id,
                    idempotency_key=key,
                    appointment_id=stored.id,
                    control_id=control_id,
                    message=sealed,
                    key_id=kid,
                    status="pending",
                    attempts=0,
                    next_attempt_us=0,
                    created_us=now_us(),
                )
            )

        results = self.store.transact([Create(appointment)], context, extra=enqueue)
        self.wake.set()
        stored = results[0].stored
        assert stored is not None
        return {"appointment_id": stored.id, "status": "proposed", "idempotency_key": key}

    # -- sender worker --------------------------------------------------------------

    def start(self) -> None:
        """Start the sender thread, unless no HIS endpoint is configured (bookings then wait)."""
        if self.settings.his_endpoint() is not None:
            self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def run_once(self) -> int:
        endpoint = self.settings.his_endpoint()
        if endpoint is None:
            return 0
        o = crm_his_outbox
        with for_reading(self.store.engine).connect() as conn:
            rows = conn.execute(
                select(
                    o.c.id,
                    o.c.crm_id,
                    o.c.appointment_id,
                    o.c.control_id,
                    o.c.key_id,
                    o.c.message,
                    o.c.attempts,
                )
                .where(o.c.status == "pending", o.c.next_attempt_us <= now_us())
                .order_by(o.c.id)
                .limit(50)
            ).all()
        for row in rows:
            message = self.keys.cipher.open(str(row[4]), bytes(row[5]), str(row[3]).encode())
            self._send(int(row[0]), str(row[1]), str(row[2]), str(row[3]), message, int(row[6]), endpoint)
        return len(rows)

    def _send(
        self,
        row_id: int,
        crm_id: str,
        appointment_id: str,
        control_id: str,
        message: bytes,
        attempts: int,
        endpoint: tuple[str, int],
    ) -> None:
        try:
            ack = self.transport(endpoint, message, self.settings.his_timeout_s)
        except OSError as exc:
            ack, error = None, type(exc).__name__
        else:
            error = "no answer" if ack is None else ""
        if ack is not None and ack.control_id != control_id:
            ack, error = None, "ACK for another message (MSA-2 mismatch)"
        if ack is None:
            attempts += 1
            # operator log lines carry ids and codes, never the message (issue #19)
            log.info(
                "his unreachable crm=%s appointment=%s attempt=%d error=%s",
                crm_id,
                appointment_id,
                attempts,
                error,
            )
            if attempts >= self.settings.webhook_max_attempts:
                self._finish(
                    row_id,
                    crm_id,
                    appointment_id,
                    "failed",
                    "",
                    f"HIS unreachable: {error}",
                    unreachable_reason(),
                )
            else:
                delay = backoff_s(
                    attempts, self.settings.webhook_backoff_base_s, self.settings.webhook_backoff_max_s
                )
                with for_writing(self.store.engine).begin() as conn:
                    conn.execute(
                        update(crm_his_outbox)
                        .where(crm_his_outbox.c.id == row_id)
                        .values(
                            attempts=attempts,
                            next_attempt_us=now_us() + int(delay * 1e6),
                            last_error=HIS_LAST_ERROR.seal(self.store.cipher, (row_id,), error[:200]),
                        )
                    )
            return
        if ack.code in ("AA", "CA"):
            self._finish(row_id, crm_id, appointment_id, "booked", ack.code, "", None)
        else:
            log.info(
                "his booking rejected crm=%s appointment=%s ack=%s error_code=%s",
                crm_id,
                appointment_id,
                ack.code,
                error_code(ack.error_code) or "-",
            )
            self._finish(
                row_id,
                crm_id,
                appointment_id,
                "rejected",
                ack.code,
                ack.text or f"HIS answered {ack.code}",
                rejection_reason(ack.code, error_code(ack.error_code)),
            )

    def _finish(
        self,
        row_id: int,
        crm_id: str,
        appointment_id: str,
        outcome: str,
        code: str,
        reason: str,
        told: dict[str, str | None] | None,
    ) -> None:
        """``reason`` (the HIS's text) stays with the clinic; the CRM is ``told`` codes only."""
        stored = self.store.read("Appointment", appointment_id)
        appointment = stored.resource()
        appointment.pop("meta", None)
        appointment["status"] = "booked" if outcome == "booked" else "cancelled"
        if outcome != "booked":
            appointment["cancelationReason"] = {"text": reason[:200]}
        context = RequestContext(f"crm-booking-{row_id}", client_id=crm_id, role="crm", channel="crm")

        def record(conn: Connection, _results: list[OperationResult]) -> None:
            conn.execute(
                update(crm_his_outbox)
                .where(crm_his_outbox.c.id == row_id)
                .values(
                    status=outcome,
                    ack_code=code or None,
                    last_error=HIS_LAST_ERROR.seal(self.store.cipher, (row_id,), reason[:200] or None),
                )
            )
            if outcome != "booked":
                event = PendingEvent(
                    crm_id,
                    "appointment.rejected",
                    None,
                    None,
                    {"appointment_id": appointment_id, "ack_code": code or None, "reason": told},
                )
                append_events(conn, self.keys, [event])

        self.store.transact(
            [Update("Appointment", appointment_id, appointment, if_match=stored.etag)], context, extra=record
        )
