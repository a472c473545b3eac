"""Search complexity limits and the statement timeout of HTTP reads (issue #17, item 1)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, event

from gateway.mllp.server import MllpServer
from tests.http.conftest import FHIR_JSON, fhir_post, patient
from tests.http.live import LiveServer, serve
from tests.http.test_search_storm import send_hl7
from tests.mllp.conftest import a04


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


def test_conditional_write_criteria_are_held_to_the_configured_limits(database_url: str) -> None:
    """Criteria of a conditional write and a Bundle GET are searches: the server's limits, not the defaults."""
    with serve(database_url, search_max_values=3) as server:
        headers = {"Content-Type": FHIR_JSON, "Accept": FHIR_JSON, **server.headers}
        with httpx.Client(headers=headers, timeout=30) as http:
            over = http.put(f"{server.fhir_url}/Patient?name=a,b,c,d", json=patient("CFG-1"))
            assert over.status_code == 400
            code, text = _outcome(over)
            assert code == "too-costly" and "search_max_values" in text
            assert http.put(f"{server.fhir_url}/Patient?name=a,b,c", json=patient("CFG-1")).status_code == 201
            bundle = {
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": [{"request": {"method": "GET", "url": "Patient?name=a,b,c,d"}}],
            }
            refused = http.post(server.fhir_url, json=bundle)
            assert refused.status_code == 400
            assert "search_max_values" in _outcome(refused)[1]


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgresql"])  # statement_timeout is PostgreSQL's; SQLite has none
def test_a_slow_write_is_a_503_over_rest_and_a_transient_ae_over_hl7(database_url: str) -> None:
    """Every write transaction has a statement timeout: REST gets 503 ``timeout``, HL7 an AE its resend fixes."""
    with serve(database_url, store_write_statement_timeout_ms=50) as server:
        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, daemon=True).start()
        mllp = MllpServer(server.runtime, "127.0.0.1", 0)
        asyncio.run_coroutine_threadsafe(mllp.start(), loop).result(30)
        admin = create_engine(database_url)
        try:
            with httpx.Client(headers={"Accept": FHIR_JSON, **server.headers}, timeout=30) as http:
                with admin.begin() as conn:  # test-only: every new resource version stalls 5 s in the server
                    conn.exec_driver_sql(_STALL)
                try:
                    started = time.monotonic()
                    response = fhir_post(http, f"{server.fhir_url}/Patient", patient("WT-1"))
                    elapsed = time.monotonic() - started
                    stalled_ack = send_hl7(mllp.port, a04("WT-HL7-1", "WT00001"))[1]
                finally:
                    with admin.begin() as conn:
                        conn.exec_driver_sql("DROP TRIGGER test_stall ON resource_version")
                assert response.status_code == 503
                code, text = _outcome(response)
                assert code == "timeout" and "store_write_statement_timeout_ms" in text
                assert elapsed < 2.5  # cancelled at 50 ms, not waited out (5 s)
                assert b"MSA|AE" in stalled_ack  # transient: not stored as the message's answer
                assert fhir_post(http, f"{server.fhir_url}/Patient", patient("WT-1")).status_code == 201
                assert b"MSA|AA" in send_hl7(mllp.port, a04("WT-HL7-1", "WT00001"))[1]  # the resend applies
                found = http.get(f"{server.fhir_url}/Patient", params={"identifier": "WT00001"}).json()
                assert found["total"] == 1
        finally:
            admin.dispose()
            asyncio.run_coroutine_threadsafe(mllp.stop(), loop).result(30)
            loop.call_soon_threadsafe(loop.stop)


_STALL = """
CREATE OR REPLACE FUNCTION test_stall() RETURNS trigger AS $$
BEGIN PERFORM pg_sleep(5); RETURN NEW; END $$ LANGUAGE plpgsql;
CREATE TRIGGER test_stall BEFORE INSERT ON resource_version FOR EACH ROW EXECUTE FUNCTION test_stall();
"""
