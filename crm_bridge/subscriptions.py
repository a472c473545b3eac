"""Webhook registrations of a CRM: create (target checked, secret shown once), list, stop, redeliver.

Why here: a registration decides where patient events will go, so it passes
:class:`~crm_bridge.webhook_policy.WebhookPolicy` before anything is stored
(OWASP ASVS 4.0.3 V12.6.1), and the status a CRM reads back reports delivery
failures as categories only (``crm_bridge.webhook_http.CATEGORIES``).
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from sqlalchemy import Engine, insert, select, update

from common import InvalidInput
from consent import KeyStore
from crm_bridge.schema import crm_dead_letter, crm_subscription
from crm_bridge.webhook_http import CATEGORIES, status_category
from crm_bridge.webhook_policy import TargetRefused, WebhookPolicy
from fhir_store import for_reading, for_writing, now_us


def _reported(error: str | None) -> str | None:
    """A stored error as the CRM may see it: rows written before categories existed held the
    socket's text or ``HTTP <status>``; they are shown as their category too."""
    if error is None or error in CATEGORIES:
        return error
    status = error.removeprefix("HTTP ")
    return status_category(int(status)) if status.isdigit() else "connection-error"


class Subscriptions:
    """Webhook registrations (secret generated here, shown once, stored sealed)."""

    def __init__(self, engine: Engine, keys: KeyStore, policy: WebhookPolicy) -> None:
        self.engine = engine
        self.keys = keys
        self.policy = policy

    def create(
        self, crm_id: str, url: str, events: list[str] | None, *, from_seq: int | None = None
    ) -> dict[str, Any]:
        """Register a webhook; :class:`~common.InvalidInput` on ``url`` when the policy refuses it."""
        try:
            self.policy.check(url)
        except TargetRefused as exc:
            raise InvalidInput(exc.reason, location="url") from exc
        sub_id = str(uuid.uuid4())
        secret = secrets.token_urlsafe(32)
        kid, sealed = self.keys.cipher.seal(secret.encode(), sub_id.encode())
        with for_writing(self.engine).begin() as conn:
            if from_seq is None:  # start at the head: a new subscription gets new events
                from_seq = 0
            conn.execute(
                insert(crm_subscription).values(
                    id=sub_id,
                    crm_id=crm_id,
                    url=url,
                    events=" ".join(events or ["*"]),
                    secret_key_id=kid,
                    secret=sealed,
                    active=True,
                    cursor=from_seq,
                    attempts=0,
                    next_attempt_us=0,
                    created_us=now_us(),
                )
            )
        return {"id": sub_id, "url": url, "events": events or ["*"], "secret": secret, "cursor": from_seq}

    def list(self, crm_id: str) -> list[dict[str, Any]]:
        s = crm_subscription
        with for_reading(self.engine).connect() as conn:
            rows = conn.execute(
                select(
                    s.c.id, s.c.url, s.c.events, s.c.active, s.c.cursor, s.c.attempts, s.c.last_error
                ).where(s.c.crm_id == crm_id)
            ).all()
            dead = conn.execute(
                select(crm_dead_letter.c.subscription_id, crm_dead_letter.c.seq).where(
                    crm_dead_letter.c.status == "dead"
                )
            ).all()
        dead_by: dict[str, list[int]] = {}
        for sid, seq in dead:
            dead_by.setdefault(str(sid), []).append(int(seq))
        return [
            {
                "id": r[0],
                "url": r[1],
                "events": r[2].split(),
                "active": bool(r[3]),
                "cursor": int(r[4]),
                "attempts": int(r[5]),
                "last_error": _reported(r[6]),
                "dead_letters": sorted(dead_by.get(str(r[0]), [])),
            }
            for r in rows
        ]

    def deactivate(self, crm_id: str, sub_id: str) -> bool:
        with for_writing(self.engine).begin() as conn:
            result = conn.execute(
                update(crm_subscription)
                .where(crm_subscription.c.id == sub_id, crm_subscription.c.crm_id == crm_id)
                .values(active=False)
            )
        return bool(result.rowcount)

    def redeliver(self, crm_id: str, sub_id: str, *, from_seq: int | None = None) -> int:
        """Requeue the dead letters (and optionally rewind the cursor to ``from_seq``)."""
        with for_writing(self.engine).begin() as conn:
            owner = conn.execute(
                select(crm_subscription.c.crm_id).where(crm_subscription.c.id == sub_id)
            ).scalar()
            if owner != crm_id:
                return -1
            result = conn.execute(
                update(crm_dead_letter)
                .where(crm_dead_letter.c.subscription_id == sub_id, crm_dead_letter.c.status == "dead")
                .values(status="requeued")
            )
            values: dict[str, Any] = {"attempts": 0, "next_attempt_us": 0, "active": True}
            if from_seq is not None:
                values["cursor"] = from_seq
            conn.execute(update(crm_subscription).where(crm_subscription.c.id == sub_id).values(**values))
        return int(result.rowcount or 0)
