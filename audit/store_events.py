"""What the store tells the audit hook, as chain rows: which resources and patients an event names.

Why apart from :mod:`audit.hooks`: the hook decides *when* and *where* an
event is written (in the change's transaction; buffered for reads); these
functions decide *what* a change or an access says -- the versioned
resource references and the patients whose data was touched -- and are
shared by the synchronous and the buffered path, and by the consent
tombstone hook (:func:`patient_refs`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from audit.codes import ACTIONS
from audit.events import import_action
from audit.rows import Prepared, render
from fhir_store import RequestContext, ResourceChange, StoredResource

AccessAction = Literal["read", "vread", "search", "history"]
_ACCESS_SUBTYPE = {"read": "read", "vread": "vread", "search": "search-type", "history": "history"}


def patient_refs(resource: dict[str, Any] | None) -> list[str]:
    """Ids of the patients a resource is about (Patient itself, subject, patient, participants)."""
    if not resource:
        return []
    if resource.get("resourceType") == "Patient":
        return [str(resource["id"])] if resource.get("id") else []
    refs: list[str] = []
    for key in ("subject", "patient", "beneficiary"):
        ref = (resource.get(key) or {}).get("reference")
        if isinstance(ref, str):
            refs.append(ref)
    for participant in resource.get("participant") or ():
        ref = ((participant or {}).get("actor") or {}).get("reference")
        if isinstance(ref, str):
            refs.append(ref)
    return [r.split("/", 1)[1] for r in refs if r.startswith("Patient/")]


def _stored_patients(resources: Iterable[StoredResource]) -> list[str]:
    out: list[str] = []
    for stored in resources:
        if stored.resource_type == "Patient":
            out.append(stored.id)
        elif stored.content is not None:
            out.extend(patient_refs(stored.resource()))
    return list(dict.fromkeys(out))


def access_row(
    recorded_us: int,
    context: RequestContext,
    action: AccessAction,
    resources: Sequence[StoredResource],
    query: str | None,
    *,
    with_patients: bool = True,
) -> Prepared:
    """The read/vread/search/history event: versioned targets for reads, the patients of all.

    ``with_patients=False`` is the fallback when the patients cannot be read
    from the returned resources: the access is still recorded, with its targets.
    """
    if action in ("read", "vread"):
        references = [f"{r.resource_type}/{r.id}/_history/{r.version_id}" for r in resources]
    else:
        references = []
    return render(
        context,
        "rest",
        _ACCESS_SUBTYPE[action],
        recorded_us=recorded_us,
        references=references,
        patient_ids=_stored_patients(resources) if with_patients else (),
        query=query,
    )


def change_row(change: ResourceChange, context: RequestContext, recorded_us: int) -> Prepared:
    """One event per changed resource: BALP REST, or DICOM Import when it came over HL7."""
    patients = patient_refs(change.resource if change.resource is not None else change.previous)
    if change.resource_type == "Patient" and not patients:
        patients = [change.id]
    hl7 = context.channel == "hl7"
    return render(
        context,
        "110107" if hl7 else "rest",
        change.action,
        recorded_us=recorded_us,
        references=[f"{change.resource_type}/{change.id}/_history/{change.version_id}"],
        patient_ids=patients,
        action=import_action(change.action) if hl7 else ACTIONS.get(change.action, "E"),
    )
