"""Property-based conformance: the live server against the committed OpenAPI document.

For every documented operation schemathesis generates a few bounded examples
(derandomized, so the run is reproducible) and sends them over real HTTP to a
server on each backend.  Checks: no 5xx, documented status codes, documented
content types, response bodies and headers matching their schemas.
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
