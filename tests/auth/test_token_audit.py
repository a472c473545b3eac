"""Every token request, issued or refused for any reason, is one AuditEvent (issue #18 item 6).

Each request is matched to its event by the ``X-Request-ID`` it was answered with:
exactly one DICOM 110114 event, naming the client id as submitted (never the secret
or assertion), with an outcome that matches the answer.  Both backends.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.auth.test_token_endpoint import basic, clock, live, login_events, post_token, register  # noqa: F401
from tests.http.live import LiveServer

SECRET_MARK = "s3cr3t-never-audited"


def _events_for(live: LiveServer, response: httpx.Response) -> list[dict[str, Any]]:  # noqa: F811
    request_id = response.headers["x-request-id"]
    return [
        e
        for e in login_events(live)
        if any(
            x.get("what", {}).get("identifier", {}).get("value") == request_id for x in e.get("entity", [])
        )
    ]


def test_issue_and_every_kind_of_failure_is_one_event(live: LiveServer) -> None:  # noqa: F811
    secret = register(live, "tok-a")
    url = f"{live.base_url}/auth/token"
    cases: list[tuple[str, httpx.Response, str, str]] = [
        ("issued", post_token(live, "tok-a", secret), "tok-a", "0"),
        ("wrong secret", post_token(live, "tok-a", SECRET_MARK), "tok-a", "12"),
        ("unknown client", post_token(live, "tok-ghost", SECRET_MARK), "tok-ghost", "12"),
        (
            "unsupported grant",
            httpx.post(url, data={"grant_type": "password", "client_id": "tok-a", "client_secret": secret}),
            "tok-a",
            "4",
        ),
        ("invalid scope", post_token(live, "tok-a", secret, scope="system/AuditEvent.rs"), "tok-a", "4"),
        (
            "two methods",
            httpx.post(
                url,
                data={"grant_type": "client_credentials", "client_secret": SECRET_MARK},
                headers={"Authorization": basic("tok-a", SECRET_MARK)},
            ),
            "tok-a",
            "4",
        ),
        (
            "malformed basic",
            httpx.post(
                url, data={"grant_type": "client_credentials"}, headers={"Authorization": "Basic !!notbase64"}
            ),
            "unknown",
            "12",
        ),
        (
            "bad assertion",
            httpx.post(
                url,
                data={
                    "grant_type": "client_credentials",
                    "client_id": "tok-a",
                    "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                    "client_assertion": SECRET_MARK,
                },
            ),
            "tok-a",
            "12",
        ),
    ]
    for name, response, client_id, outcome in cases:
        assert (response.status_code == 200) == (outcome == "0"), (name, response.text)
        events = _events_for(live, response)
        assert len(events) == 1, name
        agent = events[0]["agent"][0]
        assert (agent["who"]["identifier"]["value"], events[0]["outcome"]) == (client_id, outcome), name
    texts = " ".join(orjson.dumps(e).decode() for e in login_events(live))
    assert SECRET_MARK not in texts and secret not in texts  # secrets never enter the trail
