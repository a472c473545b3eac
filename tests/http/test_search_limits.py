"""Search complexity limits and the statement timeout of HTTP reads (issue #17, item 1)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from tests.http.conftest import FHIR_JSON, fhir_post, patient
from tests.http.live import LiveServer, serve


def _outcome(response: httpx.Response) -> tuple[str, str]:
    issue = response.json()["issue"][0]
    return str(issue["code"]), str(issue.get("diagnostics", ""))


def _search(server: LiveServer, query: str) -> httpx.Response:
    headers = {"Accept": FHIR_JSON, **server.headers}
    return httpx.get(f"{server.fhir_url}/Patient?{query}", headers=headers, timeout=30)


OVER_LIMIT = [
    ("search_max_parameters", "&".join(f"name=a{i}" for i in range(4))),
    ("search_max_values", "name=" + ",".join(f"a{i}" for i in range(4))),
    ("search_max_includes", "&".join(["_revinclude=Encounter:subject"] * 3)),
    ("search_max_query_chars", "name=" + "a" * 200),
]


@pytest.mark.parametrize(("limit", "query"), OVER_LIMIT, ids=[limit for limit, _ in OVER_LIMIT])
def test_a_search_over_a_limit_is_a_400_naming_it(database_url: str, limit: str, query: str) -> None:
    limits = {
        "search_max_parameters": 3,
        "search_max_values": 3,
        "search_max_includes": 2,
        "search_max_query_chars": 128,
    }
    with serve(database_url, **limits) as server:
        response = _search(server, query)
        assert response.status_code == 400
        code, text = _outcome(response)
        assert code == "too-costly"
        assert limit in text
        # at the limit it is answered
        at_limit = {
            "search_max_parameters": "name=a&name=b&name=c",
            "search_max_values": "name=a,b,c",
            "search_max_includes": "_revinclude=Encounter:subject&_revinclude=Appointment:actor",
            "search_max_query_chars": "name=" + "a" * 100,
        }[limit]
        assert _search(server, at_limit).status_code == 200


def test_conditional_write_criteria_are_held_to_the_default_limits(database_url: str) -> None:
    with serve(database_url) as server:
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, **server.headers}
        many = ",".join(f"a{i}" for i in range(101))  # default search_max_values is 100
        response = httpx.put(
            f"{server.fhir_url}/Patient?name={many}",
            json=patient("LIM-1"),
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 400
        assert _outcome(response)[0] == "too-costly"


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])  # statement_timeout is PostgreSQL's; SQLite has none
def test_a_statement_timeout_is_a_503_timeout_outcome(database_url: str) -> None:
    with serve(database_url, search_statement_timeout_ms=50) as server:
        with httpx.Client(headers={"Accept": FHIR_JSON, **server.headers}, timeout=30) as http:
            assert fhir_post(http, f"{server.fhir_url}/Patient", patient("TO-1")).status_code == 201

        # test-only hook: every statement on the read pool first sleeps past the timeout
        def slow(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            cursor.execute("SELECT pg_sleep(5)")

        event.listen(server.runtime.read_engine, "before_cursor_execute", slow)
        try:
            started = time.monotonic()
            response = _search(server, "name=Nguy")
            elapsed = time.monotonic() - started
        finally:
            event.remove(server.runtime.read_engine, "before_cursor_execute", slow)
        assert response.status_code == 503
        code, text = _outcome(response)
        assert code == "timeout"
        assert "search_statement_timeout_ms" in text
        assert elapsed < 2.5  # cancelled by the server at 50 ms, not waited out (5 s)
        assert _search(server, "name=Nguy").status_code == 200  # the pool is usable again
