"""Secondary patient identifiers and the possible-duplicate tag (documented in docs/identifiers.md).

Why: a hospital's record number (HL7 PID-3 type MR or PI, scoped by its
assigning authority CX-4) identifies *its* registration of a person; the
national numbers (CCCD, BHYT, passport, social security) identify the person.
A second registration of one person under a new record number is a real event
at the HIS, and HL7 v2 fixes it later with ADT^A40 (merge patient, HL7 v2.5.1
ch. 3.3.40).  So an HL7 message whose secondary identifier already belongs to
another Patient is applied, and both Patients are marked for review with a
``meta.tag`` (FHIR R4 Meta.tag, https://hl7.org/fhir/R4/resource.html#tag),
searchable as ``_tag=<system>|possible-duplicate``, until an A40 merge of the
two or an operator's update without the tag resolves it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from common.identifiers import BHYT_SYSTEM, CCCD_SYSTEM

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"

SECONDARY_IDENTIFIER_SYSTEMS = frozenset({CCCD_SYSTEM, BHYT_SYSTEM})
"""Systems of person-level numbers: never a Patient upsert key."""

SECONDARY_IDENTIFIER_TYPES = frozenset({"NI", "NN", "HC", "PPN", "SS"})
"""HL7 table 0203 types of person-level numbers: national id (CCCD), national unique
individual id, health card (BHYT), passport, social security number."""

RECORD_NUMBER_TYPES = ("MR", "PI")
"""HL7 table 0203 types of a facility's record number, in order of preference as upsert key."""

PATIENT_STATUS_SYSTEM = "https://fhir.carebridge.vn/CodeSystem/patient-status"
POSSIBLE_DUPLICATE = "possible-duplicate"
POSSIBLE_DUPLICATE_TAG: dict[str, str] = {
    "system": PATIENT_STATUS_SYSTEM,
    "code": POSSIBLE_DUPLICATE,
    "display": "Possible duplicate registration: review and merge (ADT^A40) or clear",
}


def is_secondary_identifier(identifier: Mapping[str, Any]) -> bool:
    """Whether an Identifier is a person-level number (by system, else by its v2-0203 type)."""
    if identifier.get("system") in SECONDARY_IDENTIFIER_SYSTEMS:
        return True
    kind = identifier.get("type")
    codings = kind.get("coding") if isinstance(kind, Mapping) else None
    return any(
        isinstance(coding, Mapping)
        and coding.get("system") == V2_0203
        and str(coding.get("code", "")).upper() in SECONDARY_IDENTIFIER_TYPES
        for coding in codings or []
    )


def _is_tag(coding: Any) -> bool:
    return (
        isinstance(coding, Mapping)
        and coding.get("system") == PATIENT_STATUS_SYSTEM
        and coding.get("code") == POSSIBLE_DUPLICATE
    )


def is_possible_duplicate(resource: Mapping[str, Any] | None) -> bool:
    """Whether a resource carries the possible-duplicate tag."""
    meta = (resource or {}).get("meta")
    return isinstance(meta, Mapping) and any(_is_tag(c) for c in meta.get("tag") or [])


def with_possible_duplicate(resource: dict[str, Any], marked: bool) -> dict[str, Any]:
    """A copy of ``resource`` with the tag added (``marked``) or removed; other tags kept."""
    meta = dict(resource.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if not _is_tag(t)]
    if marked:
        tags.append(dict(POSSIBLE_DUPLICATE_TAG))
    if tags:
        meta["tag"] = tags
    else:
        meta.pop("tag", None)
    out = {k: v for k, v in resource.items() if k != "meta"}
    if meta:
        out["meta"] = meta
    return out
