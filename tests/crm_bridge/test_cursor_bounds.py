"""Feed cursors beyond a 64-bit sequence are a 400 naming the parameter, not a 500 (issue #16 item 8)."""

from __future__ import annotations

import httpx

from tests.crm_bridge.conftest import CrmClient, Receiver

HUGE = ("9223372036854775808", str(10**30))


def _invalid(response: httpx.Response, parameter: str) -> None:
    assert response.status_code == 400, response.text
    issue = response.json()["issue"][0]
    assert response.json()["resourceType"] == "OperationOutcome" and issue["code"] == "invalid"
    assert any(parameter in e for e in issue["expression"]), issue


def test_a_huge_feed_cursor_is_400(crm: CrmClient) -> None:
    for value in (*HUGE, "-1"):
        _invalid(crm.http.get("/changes", params={"cursor": value}), "cursor")
    assert crm.http.get("/changes", params={"cursor": str(2**63 - 1)}).status_code == 200


def test_a_huge_or_malformed_from_cursor_is_400(crm: CrmClient, receiver: Receiver) -> None:
    url = receiver.url  # registered like every other webhook test's target
    for value in (2**63, 10**30, -1, "soon", 1.5, True):
        _invalid(crm.http.post("/subscriptions", json={"url": url, "from_cursor": value}), "from_cursor")
    created = crm.http.post("/subscriptions", json={"url": url, "from_cursor": 0})
    assert created.status_code == 201, created.text
    sub_id = created.json()["id"]
    for value in (2**63, 10**30, "soon"):
        _invalid(
            crm.http.post(f"/subscriptions/{sub_id}/redeliver", json={"from_cursor": value}), "from_cursor"
        )
    assert crm.http.post(f"/subscriptions/{sub_id}/redeliver", json={"from_cursor": 0}).status_code == 200
