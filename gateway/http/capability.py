"""What the REST API implements, per resource type, and the CapabilityStatement saying so.

The interactions a type supports are declared once here and checked by every
route (:func:`require`), so the CapabilityStatement
(https://hl7.org/fhir/R4/capabilitystatement.html) cannot claim an interaction
the server refuses, nor hide one it serves.  Types come from
``fhir_store.validation.SUPPORTED_TYPES`` and search parameters from
``fhir_store.search_params.SEARCH_SPECS``: a later package that registers a
type (Consent, AuditEvent, Task) appears here automatically, and may narrow its
interactions with :func:`restrict` (an audit trail is read-only, for example).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import orjson

from common import MethodNotAllowed, NotFound
from fhir_store import INCLUDES, SEARCH_SPECS, SUPPORTED_TYPES, format_instant, now_us

# https://hl7.org/fhir/R4/valueset-type-restful-interaction.html (type-level subset we serve).
ALL_INTERACTIONS: tuple[str, ...] = (
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
_RESTRICTED: dict[str, tuple[str, ...]] = {}
# Types served by their own routes outside the FHIR store (the audit trail): type → resource entry.
_EXTERNAL: dict[str, dict[str, Any]] = {}
_STARTED = format_instant(now_us())
SOFTWARE_VERSION = "0.1.0"


def restrict(resource_type: str, interactions: tuple[str, ...]) -> None:
    """Let a later package limit what REST may do with its type."""
    unknown = set(interactions) - set(ALL_INTERACTIONS)
    if unknown:
        raise ValueError(f"unknown interactions {sorted(unknown)}")
    _RESTRICTED[resource_type] = interactions
    _statement.cache_clear()


def declare_external(
    resource_type: str, interactions: tuple[str, ...], search_params: list[dict[str, str]]
) -> None:
    """List a type that has its own routes, not the store's (``AuditEvent``: read + search only).

    Such a type is not in ``SUPPORTED_TYPES`` (the store must never write it),
    yet the CapabilityStatement has to say what the API does with it.
    """
    unknown = set(interactions) - set(ALL_INTERACTIONS)
    if unknown:
        raise ValueError(f"unknown interactions {sorted(unknown)}")
    _EXTERNAL[resource_type] = {
        "type": resource_type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
        "interaction": [{"code": code} for code in interactions],
        "versioning": "no-version",
        "readHistory": False,
        "updateCreate": False,
        "conditionalCreate": False,
        "conditionalRead": "not-supported",
        "conditionalUpdate": False,
        "conditionalDelete": "not-supported",
        "searchParam": search_params,
    }
    _statement.cache_clear()


def interactions(resource_type: str) -> tuple[str, ...]:
    return _RESTRICTED.get(resource_type, ALL_INTERACTIONS)


def require(resource_type: str, interaction: str) -> None:
    """404 for a type we do not serve, 405 for an interaction it does not allow."""
    if resource_type not in SUPPORTED_TYPES:
        raise NotFound(f"resource type '{resource_type}' is not supported", location="type")
    if interaction not in interactions(resource_type):
        raise MethodNotAllowed(f"{interaction} is not supported for {resource_type}", location=resource_type)


def _search_params(resource_type: str) -> list[dict[str, str]]:
    params = [
        {
            "name": "_id",
            "type": "token",
            "definition": "http://hl7.org/fhir/SearchParameter/Resource-id",
        },
        {
            "name": "_lastUpdated",
            "type": "date",
            "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated",
        },
    ]
    spec = SEARCH_SPECS.get(resource_type)
    if spec is not None:
        for param in spec.params.values():
            item = {"name": param.name, "type": param.kind}
            if param.documentation:
                item["documentation"] = param.documentation
            params.append(item)
    return params


def _resource(resource_type: str) -> dict[str, Any]:
    allowed = interactions(resource_type)
    writes = {"create", "update", "delete"} & set(allowed)
    entry: dict[str, Any] = {
        "type": resource_type,
        "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
        "interaction": [{"code": code} for code in allowed],
        "versioning": "versioned-update",
        "readHistory": "vread" in allowed,
        "updateCreate": "update" in allowed,
        "conditionalCreate": "create" in writes,
        "conditionalRead": "not-supported",
        "conditionalUpdate": "update" in writes,
        "conditionalDelete": "single" if "delete" in writes else "not-supported",
    }
    if "search-type" in allowed:
        includes = [f"{src}:{param}" for (src, param) in INCLUDES if src == resource_type]
        revincludes = [
            f"{src}:{param}" for (src, param), target in INCLUDES.items() if target == resource_type
        ]
        if includes:
            entry["searchInclude"] = includes
        if revincludes:
            entry["searchRevInclude"] = revincludes
        entry["searchParam"] = _search_params(resource_type)
    if resource_type == "Patient" and "read" in allowed:
        entry["operation"] = [
            {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}
        ]
    return entry


@lru_cache(maxsize=32)
def _statement(base: str, types: tuple[str, ...]) -> bytes:
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": _STARTED,
        "publisher": "carebridge",
        "kind": "instance",
        "software": {"name": "carebridge", "version": SOFTWARE_VERSION},
        "implementation": {"description": "carebridge FHIR R4 facade", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "resource": [
                    _EXTERNAL[t] if t in _EXTERNAL else _resource(t) for t in sorted({*types, *_EXTERNAL})
                ],
                "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
            }
        ],
    }
    return orjson.dumps(statement)


def capability_statement(base: str) -> bytes:
    """Built on first use per base URL and type set, then served from memory."""
    return _statement(base, tuple(sorted(SUPPORTED_TYPES)))
