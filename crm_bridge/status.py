"""Reads other packages make on the CRM bridge's tables: feed heads, backlogs, dead letters, HIS bookings.

Why here: the tables (``crm_bridge.schema``) belong to this package; the
gateway's metrics and ``carebridge crm status`` ask for these figures by name
rather than writing SQL on ``crm_outbox`` or ``crm_subscription``.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Connection, and_, func, select

from crm_bridge.schema import crm_dead_letter, crm_his_outbox, crm_outbox, crm_subscription

# Booked/rejected HIS rows are history; counting them would scan it all.
HIS_OPEN_STATUSES = ("pending", "failed")


def subscribed_crm_ids(conn: Connection) -> set[str]:
    """CRMs with at least one webhook subscription (active or not)."""
    return {str(c) for c in conn.execute(select(crm_subscription.c.crm_id).distinct()).scalars()}


def outbox_heads(conn: Connection, crm_ids: Iterable[str]) -> dict[str, int]:
    """Highest change-feed ``seq`` per CRM (0 when none).

    One index lookup per CRM (the ``(crm_id, seq)`` index) rather than a GROUP BY
    over the whole outbox.
    """
    o = crm_outbox
    return {
        crm_id: int(conn.execute(select(func.max(o.c.seq)).where(o.c.crm_id == crm_id)).scalar() or 0)
        for crm_id in crm_ids
    }


def outbox_head(conn: Connection) -> int:
    """Highest change-feed ``seq`` over all CRMs (0 when the outbox is empty)."""
    return int(conn.execute(select(func.coalesce(func.max(crm_outbox.c.seq), 0))).scalar() or 0)


def outbox_size(conn: Connection) -> int:
    """Events in the change feed, all CRMs."""
    return int(conn.execute(select(func.count()).select_from(crm_outbox)).scalar() or 0)


def subscription_cursors(conn: Connection) -> list[tuple[str, str, int]]:
    """``(subscription id, crm id, saved cursor)`` of every subscription."""
    rows = conn.execute(
        select(crm_subscription.c.id, crm_subscription.c.crm_id, crm_subscription.c.cursor)
    ).all()
    return [(str(r[0]), str(r[1]), int(r[2])) for r in rows]


def webhook_backlogs(conn: Connection) -> list[tuple[str, str, int, int | None]]:
    """Per active subscription: ``(crm, subscription, events after its cursor, oldest created_us)``."""
    o, s = crm_outbox, crm_subscription
    pending = (
        select(s.c.crm_id, s.c.id, func.count(o.c.seq), func.min(o.c.created_us))
        .select_from(s.outerjoin(o, and_(o.c.crm_id == s.c.crm_id, o.c.seq > s.c.cursor)))
        .where(s.c.active.is_(True))
        .group_by(s.c.crm_id, s.c.id)
    )
    return [
        (str(crm_id), str(sub_id), int(count or 0), oldest)
        for crm_id, sub_id, count, oldest in conn.execute(pending)
    ]


def dead_letter_counts(conn: Connection) -> list[tuple[str, str, int]]:
    """Per subscription: ``(crm, subscription, dead letters not yet redelivered)``."""
    s, d = crm_subscription, crm_dead_letter
    rows = conn.execute(
        select(s.c.crm_id, s.c.id, func.count(d.c.id))
        .select_from(
            s.outerjoin(d, and_(d.c.subscription_id == s.c.id, d.c.status.in_(("dead", "requeued"))))
        )
        .group_by(s.c.crm_id, s.c.id)
    )
    return [(str(crm_id), str(sub_id), int(count)) for crm_id, sub_id, count in rows]


def his_outbox_counts(conn: Connection) -> dict[str, int]:
    """CRM booking requests to the HIS per open status (``HIS_OPEN_STATUSES``), 0 when none."""
    h = crm_his_outbox
    query = select(h.c.status, func.count()).where(h.c.status.in_(HIS_OPEN_STATUSES)).group_by(h.c.status)
    counts = {str(status): int(count) for status, count in conn.execute(query)}
    return {status: counts.get(status, 0) for status in HIS_OPEN_STATUSES}


def patient_disclosures(
    conn: Connection, patient_id: str, limit: int = 500
) -> list[tuple[str, str, str, int]]:
    """What each CRM was given about one patient, newest first: ``(crm, event type, purposes, created_us)``.

    Why (Law 91/2025/QH15 Art. 14, Decree 356/2025/ND-CP Art. 7): a compliance
    officer must be able to say which processor received a patient's data, when
    and under which purposes.  An outbox row is a disclosure: it is placed on the
    CRM's change feed and webhooks (``purposes`` space-separated, "" when the
    event is not purpose-bound).  Rows removed by a withdrawal or an erasure are
    gone from here; their disclosure AuditEvents remain in the trail.
    """
    o = crm_outbox.c
    rows = conn.execute(
        select(o.crm_id, o.event_type, o.purposes, o.created_us)
        .where(o.patient_id == patient_id)
        .order_by(o.seq.desc())
        .limit(limit)
    ).all()
    return [(str(r[0]), str(r[1]), str(r[2] or ""), int(r[3])) for r in rows]
