"""Patient.link after a merge: who survives, what later messages change, what an unlink undoes.

FHIR R4 Patient.link (https://hl7.org/fhir/R4/patient-definitions.html#Patient.link)
and the R5 ``Patient/$merge`` operation: the merged record (source) becomes
inactive with ``replaced-by`` pointing at the survivor (target), which carries
``replaces``.  HL7 v2 messages keep quoting the retired record number for a
while (HL7 v2.5.1 ch. 3.6.2: the merge is not reported to every system at once),
so a conditional write that names it goes to the survivor instead of reviving
the merged record; and the HIS knows nothing of FHIR links, so a Patient
restated over HL7 keeps the links it does not carry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhir_store.model import StoredResource

MAX_HOPS = 16
"""Longest ``replaced-by`` chain followed; longer (or a cycle) stops at the last record reached."""


def replaced_by(resource: dict[str, Any]) -> str | None:
    """The id of the Patient that replaces this one, if the record is a merged one."""
    for link in resource.get("link") or []:
        ref = (link.get("other") or {}).get("reference") or ""
        if link.get("type") == "replaced-by" and ref.startswith("Patient/"):
            return str(ref.split("/", 1)[1])
    return None


def follow_replaced_by(
    patient_id: str, load: Callable[[str], StoredResource | None]
) -> tuple[str, list[StoredResource]]:
    """(survivor id, the merged records passed on the way) from ``patient_id``; cycle-safe."""
    seen = {patient_id}
    retired: list[StoredResource] = []
    current = patient_id
    for _ in range(MAX_HOPS):
        stored = load(current)
        if stored is None or stored.deleted:
            break
        nxt = replaced_by(stored.resource())
        if nxt is None or nxt in seen:
            break
        retired.append(stored)
        seen.add(nxt)
        current = nxt
    return current, retired


def _key(identifier: dict[str, Any]) -> tuple[Any, Any]:
    return identifier.get("system"), identifier.get("value")


def onto_survivor(
    incoming: dict[str, Any], survivor: dict[str, Any], retired: list[StoredResource]
) -> dict[str, Any]:
    """``incoming`` (written for a retired record number) as an update of the survivor.

    The retired numbers stay with the merged records (they own them); the
    survivor keeps its own identifiers that the message does not name.
    """
    old = {_key(i) for r in retired for i in r.resource().get("identifier") or []}
    kept = [i for i in incoming.get("identifier") or [] if _key(i) not in old]
    named = {_key(i) for i in kept}
    extra = [i for i in survivor.get("identifier") or [] if _key(i) not in named]
    return {**incoming, "identifier": [*kept, *extra]}


def as_retired(incoming: dict[str, Any]) -> dict[str, Any]:
    """``incoming`` written to a merged record (a message from before its merge): it stays inactive.

    Its ``replaced-by`` link is kept by :func:`keep_links` like any link the HIS does not send.
    """
    return {**incoming, "active": False}


def keep_links(incoming: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """``incoming`` with the previous version's links it does not carry (HL7 senders know no links)."""
    before = previous.get("link") or []
    if not before:
        return incoming
    now = incoming.get("link") or []
    refs = {(lk.get("other") or {}).get("reference") for lk in now}
    missing = [lk for lk in before if (lk.get("other") or {}).get("reference") not in refs]
    return {**incoming, "link": [*now, *missing]} if missing else incoming


def unlinked(resource: dict[str, Any], other_id: str) -> dict[str, Any]:
    """``resource`` without its links to ``Patient/other_id``; active again if it was replaced by it."""
    links = resource.get("link") or []
    ref = f"Patient/{other_id}"
    rest = [lk for lk in links if (lk.get("other") or {}).get("reference") != ref]
    if len(rest) == len(links):
        return resource
    out = {k: v for k, v in resource.items() if k != "link"}
    if rest:
        out["link"] = rest
    if replaced_by(resource) == other_id:
        out["active"] = True
    return out
