"""Reviewing the trail from the console: who accessed a patient's record, and a verify against the anchors.

Why: Circular 13/2025/TT-BYT (traceability of every access) and Law 91/2025/QH15
give the patient and the compliance officer the right to know who looked at a
record, when and why; ISO/IEC 27001:2022 A.8.15 wants the logs reviewable by a
person, not only by an API client.  :func:`patient_accesses` reads the events
naming a patient (the same ``audit_event_key`` index as ``GET
/fhir/AuditEvent?patient=``) and returns the facts a reviewer reads -- who, role,
when, purpose of use (IHE BALP ``purposeOfEvent``), action, outcome -- so the
gateway never parses AuditEvent JSON or writes SQL on the audit tables.
:func:`verify_with_anchors` is ``carebridge audit verify --anchors`` for a
running server: the key file the server signs with, the anchor file from the
settings.  Neither records the review: the caller audits it (reading the log is
logged, A.8.15).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Connection

from audit.anchors import AnchorError, read_anchors
from audit.export import search_audit
from audit.hooks import AuditHook
from audit.verify import VerifyResult, verify_engine


@dataclass(frozen=True)
class AccessEntry:
    """One event naming the patient, as a reviewer reads it."""

    recorded_us: int
    who: str  # agent altId: a person's "Name (username)" or an OAuth client id
    role: str
    purpose: str  # purposeOfEvent code (v3 ActReason), "" when none was stated
    action: str  # C R U D E
    outcome: str  # 0 success, 4 minor, 8 serious, 12 major failure
    kind: str  # the subtype (read, search-type, console-view, ...) or the type code (110107 import)


def _first_code(element: Any) -> str:
    for concept in element or ():
        for coding in (concept or {}).get("coding") or ():
            if coding.get("code"):
                return str(coding["code"])
    return ""


def _recorded_us(text: str) -> int:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return int(moment.timestamp()) * 1_000_000 + moment.microsecond


def access_entry(content: bytes) -> AccessEntry:
    """The reviewer's facts of one stored AuditEvent."""
    event: dict[str, Any] = orjson.loads(content)
    agents = event.get("agent") or ()
    requestor = next((a for a in agents if a.get("requestor")), agents[0] if agents else {})
    who = requestor.get("altId") or ((requestor.get("who") or {}).get("identifier") or {}).get("value")
    subtype = event.get("subtype") or ()
    kind = str(subtype[0].get("code", "")) if subtype else str((event.get("type") or {}).get("code", ""))
    return AccessEntry(
        recorded_us=_recorded_us(str(event.get("recorded", "1970-01-01T00:00:00Z"))),
        who=str(who or ""),
        role=_first_code(requestor.get("role")),
        purpose=_first_code(event.get("purposeOfEvent")),
        action=str(event.get("action") or ""),
        outcome=str(event.get("outcome") or ""),
        kind=kind,
    )


def patient_accesses(
    conn: Connection, patient_id: str, *, limit: int = 1000, max_seq: int | None = None
) -> tuple[list[AccessEntry], int]:
    """The newest ``limit`` events naming the patient (newest first) and how many there are.

    ``max_seq`` (inclusive) stops at the events that existed when the review
    began: the review's own AuditEvent is not part of what it shows.
    """
    contents, total = search_audit(conn, patient=patient_id, count=limit, max_seq=max_seq)
    return [access_entry(content) for content in contents], total


@dataclass(frozen=True)
class TrailCheck:
    """A verify run from the console: the result and what was known about the anchors."""

    result: VerifyResult | None
    anchor_file: str
    anchors: int  # anchors read from the file (0 when it does not exist yet)
    problem: str | None = None  # the anchor file could not be read: nothing was verified


def verify_with_anchors(hook: AuditHook, anchor_path: Path) -> TrailCheck:
    """``audit verify --anchors`` with the server's key and anchor file (a missing file: no anchor yet).

    The chain, its MACs and checkpoint signatures are checked with the key the
    server signs with; every anchor in the file must match the chain.
    """
    path = str(anchor_path)
    if not anchor_path.exists():
        return TrailCheck(verify_engine(hook.engine, hook.writer.keys, anchors=[]), path, 0)
    try:
        anchors = read_anchors(anchor_path)
    except (OSError, AnchorError) as exc:
        return TrailCheck(None, path, 0, f"cannot read anchors: {exc}")
    return TrailCheck(verify_engine(hook.engine, hook.writer.keys, anchors=anchors), path, len(anchors))
