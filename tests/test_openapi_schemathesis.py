"""Property-based conformance: the live server against the committed OpenAPI document.

For every documented operation schemathesis generates a few bounded examples
(derandomized, so the run is reproducible) and sends them over real HTTP to a
server on each backend.  Checks: no 5xx, documented status codes, documented
content types, response bodies and headers matching their schemas.

Random examples rarely hit the inputs that broke the server in the issue #17
hostile-input run (98 server errors in 57,670 cases: a NUL, a date at the top of
the range, an impossible offset, deep nesting, a 64-bit overflow, a charset, an
Accept).  So every operation also gets one targeted example per hostile value
(:data:`HOSTILE`), injected into a query parameter, a path parameter, a string
of the JSON body, or the headers; run against the code before the fix these
found the server errors on every class (docs/benchmarks.md, suite time).
Privacy and AuditEvent operations run with their own roles so the hostile
values reach the database instead of stopping at a 403.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.http.live import LiveServer, serve

OPENAPI = Path(__file__).resolve().parent.parent / "openapi" / "openapi.json"
CHECKS: list[Any] = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
EXAMPLES_PER_OPERATION = 6
#: Values the issue #17 run found server errors with; each is tried once per operation.
HOSTILE = [
    "a\x00b",
    "9999-12-31",
    "ge9999",
    "gt9999-12-31T23:59:59Z",
    "2020-01-01T00:00:00+99:99",
    "9223372036854775808",
    "Patient/\x00",
]
_DEEP = 150


def _deep() -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "http://example.org/x", "valueString": "x"}
    for _ in range(_DEEP):
        extension = {"url": "http://example.org/x", "extension": [extension]}
    return extension


def _first_string_replaced(node: Any, value: str) -> tuple[Any, bool]:
    if isinstance(node, str):
        return value, True
    if isinstance(node, dict):
        for key, child in node.items():
            new, done = _first_string_replaced(child, value)
            if done:
                return {**node, key: new}, True
    if isinstance(node, list):
        for index, child in enumerate(node):
            new, done = _first_string_replaced(child, value)
            if done:
                return [*node[:index], new, *node[index + 1 :]], True
    return node, False


def inject(case: Any, value: str, where: int) -> None:
    """Put ``value`` into one place of ``case``: a query or path parameter, or the JSON body."""
    places = [("query", k) for k in sorted(case.query or {})]
    places += [("path", k) for k in sorted(case.path_parameters or {}) if k != "type"]
    if isinstance(case.body, dict | list):
        places.append(("body", ""))
    if not places:
        case.query = {**(case.query or {}), "_format": value}
        return
    kind, key = places[where % len(places)]
    if kind == "query":
        case.query = {**case.query, key: value}
    elif kind == "path":
        case.path_parameters = {**case.path_parameters, key: value}
    else:
        body, replaced = _first_string_replaced(case.body, value)
        case.body = body if replaced else {"extension": [_deep()]}


def _headers_for(live_server: LiveServer, roles: dict[str, dict[str, str]], path: str) -> dict[str, str]:
    if path.startswith("/privacy/"):
        return roles["privacy_officer"]
    if path.startswith("/fhir/AuditEvent"):
        return roles["compliance_officer"]
    return live_server.headers


@pytest.fixture
def live_server(database_url: str) -> Iterator[LiveServer]:
    with serve(database_url) as server:
        yield server


@pytest.mark.slow
def test_live_server_conforms_to_openapi(live_server: LiveServer) -> None:
    schema: Any = schemathesis.openapi.from_path(OPENAPI)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 15
    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            case.call_and_validate(base_url=live_server.base_url, checks=CHECKS, headers=live_server.headers)

        check()


@pytest.mark.slow
def test_hostile_values_never_cause_a_server_error(live_server: LiveServer) -> None:
    """Each operation, each :data:`HOSTILE` value once (plus deep nesting, a Latin-1 charset and an
    XML Accept): never a 5xx, always a documented status."""
    schema: Any = schemathesis.openapi.from_path(OPENAPI)
    roles = {role: live_server.auth(role) for role in ("privacy_officer", "compliance_officer")}
    extras: list[dict[str, str]] = [
        {"Accept": "application/fhir+xml"},
        {"Content-Type": "application/fhir+json; charset=iso-8859-1"},
    ]
    for result in schema.get_all_operations():
        operation = result.ok()
        headers = _headers_for(live_server, roles, operation.path)

        @settings(
            max_examples=len(HOSTILE) + len(extras),
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(
            case=operation.as_strategy(),
            pick=st.integers(0, len(HOSTILE) + len(extras) - 1),
            where=st.integers(0, 7),
        )
        def check(case: Any, pick: int, where: int) -> None:
            sent = dict(headers)
            if pick < len(HOSTILE):
                inject(case, HOSTILE[pick], where)
            else:
                if "Content-Type" in extras[pick - len(HOSTILE)] and case.body is None:
                    inject(case, HOSTILE[0], where)
                sent.update(extras[pick - len(HOSTILE)])
            case.call_and_validate(base_url=live_server.base_url, checks=CHECKS, headers=sent)

        check()
