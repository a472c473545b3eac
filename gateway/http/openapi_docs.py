"""OpenAPI declarations for the FHIR routes, kept apart from the handlers.

Hot routes return raw ``Response`` objects (stored bytes, no pydantic response
model), so their documented responses, headers and parameters are declared
here with ``responses=`` and ``openapi_extra=``.  The committed
``openapi/openapi.json`` is generated from these and checked for drift; the
schemathesis test holds the live server to it.  Schemas are deliberately
loose (FHIR resources are validated by fhir.resources, not by OpenAPI).
"""

from __future__ import annotations

from typing import Any

from gateway.http.media import FHIR_JSON

RESOURCE: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string"}},
    "additionalProperties": True,
}
OUTCOME: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType", "issue"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["OperationOutcome"]},
        "issue": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": True,
}
BUNDLE: dict[str, Any] = {
    "type": "object",
    "required": ["resourceType", "type"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "type": {"type": "string"},
        "total": {"type": "integer", "minimum": 0},
        "link": {"type": "array", "items": {"type": "object"}},
        "entry": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": True,
}

_ERROR_TEXT = {
    400: "Invalid request or resource (OperationOutcome names the element)",
    404: "Unknown resource, resource type or route",
    405: "Interaction not supported for this type",
    406: "Only application/fhir+json can be produced",
    409: "Version conflict or duplicate business identifier",
    410: "The resource was deleted",
    412: "If-Match does not match, or conditional criteria match several resources",
    413: "Body larger than the configured limit",
    415: "Body is not application/fhir+json",
    422: "Business rule violated",
}
_HEADER_DOCS = {
    "ETag": 'Version of the resource, W/"n"',
    "Last-Modified": "meta.lastUpdated as an HTTP date",
    "Location": "[base]/[type]/[id]/_history/[vid]",
}


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {FHIR_JSON: {"schema": schema}}


def responses(
    ok: dict[int, tuple[str, dict[str, Any] | None]], errors: tuple[int, ...], headers: tuple[str, ...] = ()
) -> dict[int | str, dict[str, Any]]:
    """Success responses ``{status: (description, schema or None)}`` plus OperationOutcome errors."""
    out: dict[int | str, dict[str, Any]] = {}
    for status, (description, schema) in ok.items():
        item: dict[str, Any] = {"description": description}
        if schema is not None:
            item["content"] = _content(schema)
        if headers:
            item["headers"] = {
                h: {"description": _HEADER_DOCS[h], "schema": {"type": "string"}} for h in headers
            }
        out[status] = item
    for status in (*errors, 406):
        out[status] = {"description": _ERROR_TEXT[status], "content": _content(OUTCOME)}
    out["default"] = {"description": "Other error", "content": _content(OUTCOME)}
    return out


_EDGE_TEXT = {
    400: "Refused at the HTTP edge: a NUL (U+0000), or JSON nested too deep (OperationOutcome names the element)",
    406: "Only JSON can be produced",
    413: "Body larger than the configured limit",
    415: "Body declared in a charset other than UTF-8",
}
_BODY_METHODS = ("post", "put", "patch", "delete")


def document_edge_refusals(schema: dict[str, Any]) -> None:
    """Add the refusals of :mod:`gateway.http.input_guard` to every operation that does not already
    document them (or a ``default``): the guard runs before any route."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("OperationOutcome", OUTCOME)
    refused = {"schema": {"$ref": "#/components/schemas/OperationOutcome"}}
    for path, item in schema.get("paths", {}).items():
        for method, operation in item.items():
            answers = operation.setdefault("responses", {})
            if "default" in answers:
                continue
            statuses = [400]
            if method in _BODY_METHODS:
                statuses += [413, 415]
            if path.startswith(("/crm/", "/privacy/")):
                statuses.append(406)
            for status in statuses:
                answers.setdefault(
                    str(status), {"description": _EDGE_TEXT[status], "content": {FHIR_JSON: refused}}
                )


def not_found() -> dict[int | str, dict[str, Any]]:
    """404 for routers whose paths carry an id (router-level ``responses``)."""
    return {404: {"description": "No such request, subscription or resource", "content": _content(OUTCOME)}}


def auth_errors() -> dict[int | str, dict[str, Any]]:
    """401/403 OperationOutcomes every authenticated router can answer (router-level ``responses``)."""
    return {
        401: {"description": "Missing, invalid or expired bearer token", "content": _content(OUTCOME)},
        403: {"description": "Role or scope does not allow this", "content": _content(OUTCOME)},
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _header(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": description,
    }


FORMAT = _query(
    "_format", {"type": "string", "enum": ["json", FHIR_JSON, "application/json"]}, "Override Accept"
)
PREFER = _header("Prefer", "return=minimal | return=representation | return=OperationOutcome")
IF_MATCH = _header("If-Match", 'Only update if the current version is this ETag (W/"n")')
IF_NONE_EXIST = _header(
    "If-None-Exist", "Conditional create: search criteria such as identifier=system|value"
)
IF_NONE_MATCH = _header("If-None-Match", "Answer 304 if the current version has this ETag")

SEARCH_PARAMS: list[dict[str, Any]] = [
    _query("_id", {"type": "string"}, "Logical id (comma = OR)"),
    _query("identifier", {"type": "string"}, "token system|value"),
    _query("_lastUpdated", {"type": "string"}, "date with prefix eq ne lt gt le ge"),
    _query("_count", {"type": "integer", "minimum": 0, "maximum": 1000}, "Page size"),
    _query("_offset", {"type": "integer", "minimum": 0}, "Position in the result (paging links)"),
    _query(
        "_page_token",
        {"type": "string"},
        "Frozen result of a multi-page search (paging links); only for the caller and search that made it",
    ),
    _query("_sort", {"type": "string"}, "Sort keys, - for descending"),
    _query("_include", {"type": "string"}, "e.g. Encounter:subject"),
    _query("_revinclude", {"type": "string"}, "e.g. Encounter:subject"),
    _query("_summary", {"type": "string", "enum": ["count", "true", "false"]}, "Summary mode"),
    _query("_total", {"type": "string", "enum": ["none", "estimate", "accurate"]}, "Total mode"),
    _query("_elements", {"type": "string"}, "Top-level elements to return"),
    FORMAT,
]
HISTORY_PARAMS: list[dict[str, Any]] = [
    _query("_since", {"type": "string"}, "Only versions at or after this instant"),
    _query("_count", {"type": "integer", "minimum": 1, "maximum": 1000}, "Page size"),
    _query(
        "_page_token",
        {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
        "Continue before this version sequence (paging links)",
    ),
    FORMAT,
]
CRITERIA = [
    _query("identifier", {"type": "string"}, "Criteria, e.g. identifier=system|value"),
    FORMAT,
]


def body(schema: dict[str, Any] = RESOURCE, media: str = FHIR_JSON) -> dict[str, Any]:
    return {"required": True, "content": {media: {"schema": schema}, "application/json": {"schema": schema}}}


def extra(parameters: list[dict[str, Any]], request_body: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"parameters": parameters}
    if request_body is not None:
        out["requestBody"] = request_body
    return out


FORM_BODY = {
    "required": False,
    "content": {
        "application/x-www-form-urlencoded": {
            "schema": {
                "type": "object",
                "properties": {"identifier": {"type": "string"}, "_count": {"type": "integer", "minimum": 0}},
            }
        }
    },
}
