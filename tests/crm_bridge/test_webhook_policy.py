"""The webhook target policy on its own (issue #16 item 6): what a CRM may and may not point carebridge at."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from common import CrmSettings
from crm_bridge import webhook_policy
from crm_bridge.webhook_policy import TargetRefused, WebhookPolicy, is_local_address, parse_networks

PUBLIC = "93.184.216.34"


def _resolver(answers: dict[str, list[str]]) -> object:
    def resolve(host: str, port: int) -> list[str]:
        return answers[host]

    return resolve


def strict(**answers: list[str]) -> WebhookPolicy:
    """The default settings (https only, nothing non-public allowed) with a fake DNS."""
    policy = WebhookPolicy.from_settings(CrmSettings(), own_ports=(8080, 2575))
    policy.resolver = _resolver({"crm.example": [PUBLIC], **answers})  # type: ignore[assignment]
    return policy


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://crm.example/hook", "https"),
        ("https://127.0.0.1/hook", "loopback"),
        ("https://127.8.9.10:8443/hook", "loopback"),
        ("https://[::1]/hook", "loopback"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://10.1.2.3/hook", "private"),
        ("https://192.168.0.10/hook", "private"),
        ("https://172.16.5.5/hook", "private"),
        ("https://[fd00::5]/hook", "private"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://224.0.0.1/hook", "multicast"),
        ("https://100.64.0.1/hook", "non-public"),
        ("https://localhost/hook", "loopback"),  # the real resolver: a name for loopback
        ("https://user:pw@crm.example/hook", "credentials"),
        ("ftp://crm.example/hook", "https URL"),
        ("https:///nohost", "https URL"),
    ],
)
def test_registration_refuses(url: str, reason: str) -> None:
    policy = strict()
    if "localhost" in url:
        policy = WebhookPolicy.from_settings(CrmSettings())  # the system resolver
    with pytest.raises(TargetRefused, match=reason):
        policy.check(url)


def test_a_public_https_target_passes_and_every_address_counts() -> None:
    policy = strict(**{"mixed.example": [PUBLIC, "127.0.0.1"], "gone.example": []})
    policy.check("https://crm.example/hooks/carebridge")
    with pytest.raises(TargetRefused, match="loopback"):  # one bad address is enough
        policy.check("https://mixed.example/hook")
    with pytest.raises(TargetRefused, match="does not resolve"):
        policy.check("https://gone.example/hook")


def test_allow_list_and_allow_http_open_exactly_what_they_name() -> None:
    settings = CrmSettings(allow_http_webhooks=True, webhook_allowed_networks="10.20.0.0/16, ::1/128")
    policy = WebhookPolicy.from_settings(settings, own_ports=(8080,))
    policy.check("http://10.20.3.4:9000/hook")
    policy.check("https://[::1]:9000/hook")
    with pytest.raises(TargetRefused, match="private"):
        policy.check("https://10.21.0.1/hook")
    with pytest.raises(TargetRefused, match="loopback"):
        policy.check("https://127.0.0.1/hook")


def test_own_listening_ports_are_refused_even_when_loopback_is_allowed() -> None:
    policy = WebhookPolicy(allow_http=True, allowed_networks=parse_networks("127.0.0.0/8,::1/128"))
    policy.listening_on(8080)
    policy.listening_on(2575)
    for url in ("http://127.0.0.1:8080/metrics", "http://[::1]:2575/", "http://127.0.0.2:8080/fhir"):
        with pytest.raises(TargetRefused, match="carebridge itself"):
            policy.check(url)
    policy.check("http://127.0.0.1:8081/hook")  # another port of an allowed network


def test_this_machines_own_public_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """carebridge on a public address: that address is not a CRM either (nor its ports)."""
    assert is_local_address(ipaddress.ip_address("127.0.0.1"))
    assert not is_local_address(ipaddress.ip_address("203.0.113.7"))  # TEST-NET-3: nobody's
    own = "93.184.216.99"  # a public address, pretended to be this machine's
    monkeypatch.setattr(webhook_policy, "is_local_address", lambda address: str(address) == own)
    policy = strict(**{"me.example": [own]})
    with pytest.raises(TargetRefused, match="own"):
        policy.check("https://me.example/hook")
    with pytest.raises(TargetRefused, match="carebridge itself"):
        policy.check(f"https://{own}:8080/hook")
    allowed = WebhookPolicy(allowed_networks=parse_networks(f"{own}/32"), own_ports={8080})
    allowed.check(f"https://{own}/hook")
    with pytest.raises(TargetRefused, match="carebridge itself"):
        allowed.check(f"https://{own}:8080/hook")


def test_malformed_allowed_networks_stop_the_settings() -> None:
    with pytest.raises(ValidationError, match="not a network"):
        CrmSettings(webhook_allowed_networks="10.0.0.0/8,intranet")
    assert CrmSettings.model_validate({"allow_http_webhooks": "yes"}).allow_http_webhooks is True
