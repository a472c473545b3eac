"""Group commit for HL7 ingest: many concurrently received messages, one store transaction.

Why: on a durable database each message's commit is a WAL flush, and every
statement a round trip; an HIS feed on several MLLP connections delivers many
small independent messages at the same moment.  Applying the messages that
are waiting together, in arrival order, in one transaction (one journal row +
effects + audit + outbox rows each, as :meth:`gateway.ingest.Ingestor.write_unit`
builds them) costs one commit for all of them -- PostgreSQL's group commit,
done where we know which messages can share it.

Nothing about a message's answer changes: each still gets its own journal
row, AuditEvent and ACK, and no ACK leaves before the commit that made its
message durable.  If anything in the group fails (a store error, a duplicate
delivery caught by the journal's unique key, a lost race), the whole group is
rolled back and every message is processed again on its own, through the
ordinary one-message path that reports errors message by message; so the
result is always the same as processing the messages one after another.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from gateway.ingest import Ingestor
from gateway.ingest_model import Inbound, JournaledWrite, Outcome, content
from gateway.logging_setup import get_logger
from gateway.metrics import message_type_label

log = get_logger("carebridge.ingest")

OnCommit = Callable[[bytes], None] | None


def _dedup_key(inbound: Inbound) -> tuple[str, str, str, bytes] | None:
    """What makes a second delivery a duplicate (the journal's key): sender, MSH-10 and content.

    The same sender and MSH-10 with other content is a reused control id, not a
    duplicate: it may share the group (its journal row sees the first one's).
    """
    header = inbound.header
    if header is None or not header.control_id.strip():
        return None  # journaled under a unique surrogate: never a duplicate
    control = header.control_id.strip()
    return header.sending_application, header.sending_facility, control, content(inbound)


def process_group(ingestor: Ingestor, items: Sequence[tuple[Inbound, OnCommit]]) -> list[Outcome]:
    """Process messages in arrival order; consecutive one-phase messages share a transaction.

    A message that is refused up front, or asks for an enhanced-mode commit ACK, is
    processed on its own (after the group before it); a second delivery of a message
    already in the group starts a new group, where the journal answers it as a duplicate.
    """
    outcomes: list[Outcome | None] = [None] * len(items)
    group: list[int] = []
    keys: set[tuple[str, str, str, bytes]] = set()

    def flush() -> None:
        if not group:
            return
        for index, outcome in zip(group, _commit(ingestor, [items[i][0] for i in group]), strict=True):
            outcomes[index] = outcome
        group.clear()
        keys.clear()

    for index, (inbound, on_commit) in enumerate(items):
        if not ingestor.one_phase(inbound):
            flush()
            outcomes[index] = ingestor.process(inbound, on_commit=on_commit)
            continue
        key = _dedup_key(inbound)
        if key is not None and key in keys:
            flush()
        group.append(index)
        if key is not None:
            keys.add(key)
    flush()
    return [o for o in outcomes if o is not None]


def _commit(ingestor: Ingestor, inbounds: list[Inbound]) -> list[Outcome]:
    if len(inbounds) == 1:
        return [ingestor.process(inbounds[0])]
    started = time.monotonic()
    writes: list[JournaledWrite] = [ingestor.write_unit(inbound) for inbound in inbounds]
    try:
        ingestor.store.transact_group([w.unit for w in writes], validate=ingestor.validate_resources)
    except Exception as exc:  # rolled back: every message again on its own, errors reported one by one
        log.info("hl7 group commit fell back", messages=len(inbounds), reason=type(exc).__name__)
        return [ingestor.process(inbound) for inbound in inbounds]
    outcomes = []
    for inbound, write in zip(inbounds, writes, strict=True):
        ingestor.metrics.received(message_type_label(inbound.header))
        outcome = ingestor.applied(inbound, write)
        ingestor.answered(inbound, outcome, started)
        outcomes.append(outcome)
    return outcomes
