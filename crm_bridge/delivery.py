"""Change feed reads, signatures and the webhook dispatcher (registrations: ``crm_bridge.subscriptions``).

Why: the CRM must get every event (at-least-once, each with an id to
de-duplicate), in order per patient, and must be able to prove an event came
from us.  The feed is ``crm_outbox`` in ``seq`` order; a subscription is a
cursor into it.  The dispatcher posts events in ``seq`` order per
subscription and does not move past an event until it is acknowledged (2xx),
retrying with exponential backoff and jitter, so ordering per patient holds
even across long receiver outages; after ``max_attempts`` the event goes to
the dead-letter list (and can be re-delivered) so one poisoned event cannot
block a CRM forever.

Signature (documented for CRMs in ``docs/crm-integration.md``)::

    X-Carebridge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

No patient data is logged: only subscription ids, seqs and error classes.
Webhook targets are checked by :class:`~crm_bridge.webhook_policy.WebhookPolicy`
at registration (:class:`crm_bridge.subscriptions.Subscriptions`) and before every connection
(:class:`~crm_bridge.webhook_http.WebhookClient`); a failed delivery is recorded
for the CRM as a category (``crm_bridge.webhook_http.CATEGORIES``), never as a
socket message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Engine, insert, select, update

from common import CrmSettings
from consent import KeyStore
from crm_bridge.schema import crm_dead_letter, crm_subscription
from crm_bridge.webhook_http import WebhookClient, WebhookError, status_category
from crm_bridge.webhook_policy import WebhookPolicy
from crm_bridge.worker_loop import WorkerLoop, backoff_s
from fhir_store import DriverQuery, for_reading, for_writing, now_us

log = logging.getLogger("carebridge.crm.delivery")
SIGNATURE_HEADER = "X-Carebridge-Signature"
SAVE_EVERY_S = 0.5
FEED_BATCH = 200  # events read per subscription and round


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(
    secret: bytes, body: bytes, header: str, *, tolerance_s: int = 300, now: float | None = None
) -> bool:
    """Receiver-side check (also used by the tests and shown in the docs)."""
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass(frozen=True)
class FeedEvent:
    seq: int
    event_type: str
    body: dict[str, Any]
    patient_id: str | None = None  # internal id, for the disclosure's audit record (never sent)

    def wire(self) -> bytes:
        return orjson.dumps({**self.body, "seq": self.seq})


# Only events after the CRM's feed start (``crm_bridge.feed_start``): an unregistered CRM reads nothing.
_FEED = DriverQuery(
    "SELECT seq, event_id, event_type, key_id, payload, patient_id FROM crm_outbox"
    " WHERE crm_id = :crm AND seq > :after"
    " AND seq > COALESCE((SELECT f.start_seq FROM crm_feed_start f WHERE f.crm_id = :crm), :unregistered)"
    " ORDER BY seq LIMIT :limit"
)
_UNREGISTERED = 2**63 - 1
# Active subscriptions due now, and whether an operator re-queued dead letters for one.
_DUE_SUBSCRIPTIONS = DriverQuery(
    "SELECT s.id, s.crm_id, s.url, s.events, s.secret_key_id, s.secret, s.cursor, s.attempts,"
    " EXISTS (SELECT 1 FROM crm_dead_letter d WHERE d.subscription_id = s.id AND d.status = 'requeued')"
    " FROM crm_subscription s WHERE s.active = :active AND s.next_attempt_us <= :now"
)


def read_feed(engine: Engine, keys: KeyStore, crm_id: str, after: int, limit: int = 100) -> list[FeedEvent]:
    """Events after ``after`` and after the CRM's feed start, in ``seq`` order.

    A driver-level statement: the dispatcher polls it.
    """
    with for_reading(engine).connect() as conn:
        rows = _FEED.all(conn, {"crm": crm_id, "after": after, "limit": limit, "unregistered": _UNREGISTERED})
    return [
        FeedEvent(
            int(r[0]),
            str(r[2]),
            orjson.loads(keys.cipher.open(str(r[3]), bytes(r[4]), str(r[1]).encode())),
            None if r[5] is None else str(r[5]),
        )
        for r in rows
    ]


class Dispatcher:
    """Background webhook sender (a :class:`~crm_bridge.worker_loop.WorkerLoop`; ``run_once`` for tests)."""

    def __init__(
        self,
        engine: Engine,
        keys: KeyStore,
        settings: CrmSettings,
        policy: WebhookPolicy,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.keys = keys
        self.settings = settings
        self.clock = clock
        self._loop = WorkerLoop(
            "crm-webhooks",
            self.run_once,
            idle_wait_s=lambda: self.settings.poll_interval_s,
            log=log,
            failure_message="webhook dispatch round failed: %s",
            backlog=lambda: self._backlog,
            settle_s=settings.webhook_batch_window_s,
        )
        self._backlog = False  # a round stopped at FEED_BATCH events: run the next one at once
        self.wake = self._loop.wake  # set by the outbox hook after a commit that wrote events
        self.policy = policy
        self._http = WebhookClient(settings.webhook_timeout_s, policy)
        self.delivered = 0
        self.dead_lettered = 0
        # Observer of each POST attempt (seconds, ok): the /metrics webhook latency histogram.
        self.on_delivery: Callable[[float, bool], None] | None = None
        # Cursor kept in memory between saves (sub id -> (cursor, cursor last saved)); persisting
        # it after every batch would queue the dispatcher behind ingest for the write lock.  A
        # crash re-delivers at most ``SAVE_EVERY_S`` worth of events (at-least-once).
        self._cursors: dict[str, tuple[int, int]] = {}
        self._saved_at: dict[str, float] = {}

    def start(self) -> None:
        if self.policy.allow_http:
            log.warning("webhooks over plain http are allowed (CAREBRIDGE_CRM_ALLOW_HTTP_WEBHOOKS)")
        if self.policy.allowed_networks:
            log.warning(
                "webhooks to non-public addresses are allowed in %s (CAREBRIDGE_CRM_WEBHOOK_ALLOWED_NETWORKS)",
                ", ".join(str(network) for network in self.policy.allowed_networks),
            )
        self._loop.start()

    def health(self) -> tuple[bool, bool, float | None]:
        """(started in this process, thread alive, seconds the current round has run) for ``/readyz``."""
        loop = self._loop
        started = loop.round_started
        return loop.started, loop.running, None if started is None else time.monotonic() - started

    def stop(self) -> None:
        self._loop.stop()
        for sub_id, (cursor, saved) in list(self._cursors.items()):
            if cursor != saved:
                self._save(sub_id, cursor, 0, 0, None)
        self._cursors.clear()
        self._http.close()

    def run_once(self) -> int:
        """One pass over active subscriptions; returns the number of events delivered."""
        now = int(self.clock() * 1_000_000)
        with for_reading(self.engine).connect() as conn:  # polled 20 times a second: no ROLLBACK
            subs = _DUE_SUBSCRIPTIONS.all(conn, {"active": True, "now": now})
        total = 0
        self._backlog = False
        for sub in subs:
            if self._loop.stopping:
                break
            secret = self.keys.cipher.open(str(sub[4]), bytes(sub[5]), str(sub[0]).encode())
            if sub[8]:  # dead letters an operator asked to re-deliver
                total += self._requeued(str(sub[0]), str(sub[1]), str(sub[2]), secret)
            db_cursor = int(sub[6])
            memory = self._cursors.get(str(sub[0]))
            cursor = memory[0] if memory is not None and memory[1] == db_cursor else db_cursor
            total += self._subscription(
                str(sub[0]),
                str(sub[1]),
                str(sub[2]),
                set(str(sub[3]).split()),
                secret,
                cursor,
                int(sub[7]),
                db_cursor,
            )
        self.delivered += total
        return total

    def _post(self, url: str, secret: bytes, event: FeedEvent) -> str | None:
        """POST one event; ``None`` when acknowledged, else the failure's category."""
        body = event.wire()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret, body, int(self.clock())),
            "X-Carebridge-Event-Id": str(event.body.get("id")),
            "X-Carebridge-Event-Type": event.event_type,
        }
        started = time.perf_counter()
        try:
            status = self._http.post(url, body, headers)
        except WebhookError as exc:
            self._observe(started, ok=False)
            return exc.category
        failure = status_category(status)
        self._observe(started, ok=failure is None)
        return failure

    def _observe(self, started: float, *, ok: bool) -> None:
        if self.on_delivery is not None:
            self.on_delivery(time.perf_counter() - started, ok)

    def _subscription(
        self,
        sub_id: str,
        crm_id: str,
        url: str,
        types: set[str],
        secret: bytes,
        cursor: int,
        attempts: int,
        db_cursor: int,
    ) -> int:
        delivered = 0
        had_failures = attempts > 0
        events = read_feed(self.engine, self.keys, crm_id, cursor, limit=FEED_BATCH)
        self._backlog = self._backlog or len(events) == FEED_BATCH
        for event in events:
            if "*" not in types and event.event_type not in types:
                cursor = event.seq
                continue
            error = self._post(url, secret, event)
            if error is None:
                cursor, attempts = event.seq, 0
                delivered += 1
                continue
            attempts += 1
            # an operator's line per failed delivery: ids and the failure category only (issue #19)
            log.info(
                "webhook delivery failed crm=%s subscription=%s seq=%d attempt=%d error=%s",
                crm_id,
                sub_id,
                event.seq,
                attempts,
                error,
            )
            if attempts >= self.settings.webhook_max_attempts:
                self._dead_letter(sub_id, event.seq, attempts, error)
                cursor, attempts = event.seq, 0
                continue
            delay = backoff_s(
                attempts, self.settings.webhook_backoff_base_s, self.settings.webhook_backoff_max_s
            )
            self._save(sub_id, cursor, attempts, int((self.clock() + delay) * 1_000_000), error)
            return delivered
        if events:
            if had_failures or self.clock() - self._saved_at.get(sub_id, 0.0) >= SAVE_EVERY_S:
                self._save(sub_id, cursor, attempts, 0, None)
            else:
                self._cursors[sub_id] = (cursor, db_cursor)
        return delivered

    def _save(self, sub_id: str, cursor: int, attempts: int, next_us: int, error: str | None) -> None:
        with for_writing(self.engine).begin() as conn:
            conn.execute(
                update(crm_subscription)
                .where(crm_subscription.c.id == sub_id)
                .values(cursor=cursor, attempts=attempts, next_attempt_us=next_us, last_error=error)
            )
        self._cursors[sub_id] = (cursor, cursor)
        self._saved_at[sub_id] = self.clock()

    def _dead_letter(self, sub_id: str, seq: int, attempts: int, error: str) -> None:
        log.warning("webhook event seq=%d dead-lettered for subscription %s (%s)", seq, sub_id, error)
        self.dead_lettered += 1
        with for_writing(self.engine).begin() as conn:
            conn.execute(
                insert(crm_dead_letter).values(
                    subscription_id=sub_id,
                    seq=seq,
                    attempts=attempts,
                    status="dead",
                    last_error=error,
                    created_us=now_us(),
                )
            )

    def _requeued(self, sub_id: str, crm_id: str, url: str, secret: bytes) -> int:
        with for_reading(self.engine).connect() as conn:
            rows = conn.execute(
                select(crm_dead_letter.c.id, crm_dead_letter.c.seq)
                .where(crm_dead_letter.c.subscription_id == sub_id, crm_dead_letter.c.status == "requeued")
                .order_by(crm_dead_letter.c.seq)
            ).all()
        delivered = 0
        for dead_id, seq in rows:
            events = [
                e for e in read_feed(self.engine, self.keys, crm_id, int(seq) - 1, limit=1) if e.seq == seq
            ]
            error = self._post(url, secret, events[0]) if events else None
            with for_writing(self.engine).begin() as conn:
                conn.execute(
                    update(crm_dead_letter)
                    .where(crm_dead_letter.c.id == dead_id)
                    .values(status="dead" if error else "delivered", last_error=error)
                )
            delivered += 0 if error else 1
        return delivered
