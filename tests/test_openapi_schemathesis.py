"""Property-based conformance: the live server against the committed OpenAPI document.

For every documented operation schemathesis generates a few bounded examples
(derandomized, so the run is reproducible) and sends them over real HTTP to a
server on each backend.  Checks: no 5xx, documented status codes, documented
content types, response bodies and headers matching their schemas.

Random examples rarely hit the inputs that broke the server in the issue #17
hostile-input run (98 server errors in 57,670 cases: a NUL, a date at the top of
the range, an impossible offset, deep nesting, a 64-bit overflow, a charset, an
Accept).  So every operation also gets targeted requests, built from one
generated example: a NUL in each query parameter, path parameter and JSON body
in turn; each of :data:`EDGE_VALUES` (dates at the top of the range, an
impossible offset, a 64-bit overflow) in each query parameter; 150 levels of
nesting in each JSON body; an XML ``Accept`` and a Latin-1 ``charset``.  Run
against the code before the fix, this found the server errors
(docs/benchmarks.md, suite time).
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
NUL = "a\x00b"
#: Query values the issue #17 run found server errors with (besides a NUL).
EDGE_VALUES = ["ge9999", "gt9999-12-31T23:59:59Z", "2020-01-01T00:00:00+99:99", "9223372036854775808"]
_DEEP = 120  # a Bundle around it stays under the client encoder's 255 levels


def _deep() -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "http://example.org/x", "valueString": "x"}
    for _ in range(_DEEP):
        extension = {"url": "http://example.org/x", "extension": [extension]}
    return extension


def _with_nul(node: Any) -> tuple[Any, bool]:
    """``node`` with its first string replaced by one holding a NUL (and whether there was one)."""
    if isinstance(node, str):
        return NUL, True
    if isinstance(node, dict):
        for key, child in node.items():
            new, done = _with_nul(child)
            if done:
                return {**node, key: new}, True
        return {**node, "x": NUL}, True
    if isinstance(node, list):
        return [*node, NUL], True
    return node, False


def _query_names(operation: Any) -> list[str]:
    raw = operation.definition.raw
    return [p["name"] for p in raw.get("parameters", []) if p.get("in") == "query"]


def _bodies(case: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Hostile bodies that pass the checks before storage on the code before the fix (a Patient
    for the FHIR type routes, a transaction for ``POST /fhir``), else the generated body with a NUL."""
    deep = {"resourceType": "Patient", "extension": [_deep()]}
    late = {"resourceType": "Patient", "birthDate": "9999-12-31"}
    nul = {"resourceType": "Patient", "name": [{"family": NUL}], "address": [{"city": NUL}]}
    if case.path == "/fhir":
        for label, resource in (("NUL", nul), ("depth", deep), ("9999", late)):
            entry = {"resource": resource, "request": {"method": "POST", "url": "Patient"}}
            yield (
                f"body {label}",
                {"body": {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}},
            )
    elif "type" in (case.path_parameters or {}) and "_search" not in case.path:
        path = {**case.path_parameters, "type": "Patient"}
        for label, resource in (("NUL", nul), ("depth", deep), ("9999", late)):
            identified = {**resource, "id": path["id"]} if "id" in path else resource
            yield f"body {label}", {"path_parameters": path, "body": identified}
    else:
        yield "body NUL", {"body": _with_nul(case.body)[0]}
        yield "body depth", {"body": {"x": [_deep()]}}


def hostile_variants(case: Any, query_names: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, changes to the case) for every targeted request of one operation (module docstring).

    A hostile query parameter is sent alone: another generated parameter could be refused first.
    The FHIR type routes use ``Patient``.
    """
    path = dict(case.path_parameters or {})
    if "type" in path:
        path["type"] = "Patient"  # a type every test role may read and write: no 403 first
    for name in query_names:
        for value in (NUL, *EDGE_VALUES):
            yield f"query {name}={value!r}", {"query": {name: value}, "path_parameters": path}
    for name in path:
        if name != "type":
            yield f"path {name}", {"path_parameters": {**path, name: NUL}}
    if isinstance(case.body, dict | list):
        yield from _bodies(case)
        yield "charset", {"headers": {"Content-Type": "application/fhir+json; charset=iso-8859-1"}}
    if case.method == "GET":
        yield "accept xml", {"headers": {"Accept": "application/fhir+xml"}}


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


def _hostile_run(live_server: LiveServer, operation: Any, headers: dict[str, str]) -> int:
    """Send every targeted request of one operation; the number sent."""
    names = _query_names(operation)
    sent = 0

    @settings(
        max_examples=1,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def check(case: Any) -> None:
        nonlocal sent
        original = {key: getattr(case, key) for key in ("query", "path_parameters", "body")}
        for label, changes in hostile_variants(case, names):
            extra = changes.pop("headers", {})
            for key, value in changes.items():
                setattr(case, key, value)
            try:
                case.call_and_validate(
                    base_url=live_server.base_url, checks=CHECKS, headers={**headers, **extra}
                )
            except Exception as failure:
                raise AssertionError(f"{case.method} {case.path}: {label}") from failure
            finally:
                for key, value in original.items():
                    setattr(case, key, value)
            sent += 1

    check()
    return sent


@pytest.mark.slow
def test_hostile_values_never_cause_a_server_error(live_server: LiveServer) -> None:
    """Every targeted request (module docstring): never a 5xx, always a documented status."""
    schema: Any = schemathesis.openapi.from_path(OPENAPI)
    roles = {role: live_server.auth(role) for role in ("privacy_officer", "compliance_officer")}
    sent = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        sent += _hostile_run(live_server, operation, _headers_for(live_server, roles, operation.path))
    assert sent >= 350  # the targeted requests really went out (377 with the committed document)
