"""``_elements`` and ``_summary=true``: return a subset of each matched resource.

https://hl7.org/fhir/R4/search.html#elements : keep the requested top-level
elements plus ``id``, ``meta`` and ``resourceType``, and mark the result with
the ``SUBSETTED`` tag (https://hl7.org/fhir/R4/search.html#summary) so nobody
mistakes it for the complete resource and writes it back.  Summary elements
come from the fhir.resources model metadata (``isSummary`` in the spec), so
they follow the R4B definitions without a hand-kept list.  Only this path
parses stored JSON; the plain read and search paths do not.
"""

from __future__ import annotations

from collections.abc import Collection
from functools import cache
from typing import Any

import orjson
from fhir.resources.R4B import get_fhir_model_class

SUBSETTED_TAG = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
    "display": "Resource encoded in summary mode",
}
_ALWAYS = frozenset({"resourceType", "id", "meta"})


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    model: Any = get_fhir_model_class(resource_type)
    names: set[str] = set()
    for name, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if extra.get("summary_element_property"):
            names.add(info.alias or name)
    return frozenset(names)


def requested_elements(
    resource_type: str, elements: list[str] | None, summary: str | None
) -> frozenset[str] | None:
    """The top-level element names to keep, or ``None`` for the whole resource."""
    if elements:
        prefix = resource_type + "."
        return frozenset(e[len(prefix) :] if e.startswith(prefix) else e for e in elements)
    if summary == "true":
        return summary_elements(resource_type)
    return None


def subset(content: bytes, keep: Collection[str]) -> bytes:
    resource: dict[str, Any] = orjson.loads(content)
    out = {k: v for k, v in resource.items() if k in keep or k in _ALWAYS}
    meta = dict(out.get("meta") or {})
    tags = [t for t in meta.get("tag") or [] if t.get("code") != "SUBSETTED"]
    meta["tag"] = [*tags, SUBSETTED_TAG]
    out["meta"] = meta
    return orjson.dumps(out)
