"""The HL7 sender registry (issue #16 item 1): commands, table, cached directory, peer matching."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from audit.schema import audit_event
from common import AuditSettings, InvalidInput
from fhir_store import make_engine
from gateway.cli import main as cli
from gateway.hl7_senders import RegisteredSender, peer_address, refused_at_receipt, registry_refusal
from gateway.runtime import Runtime
from gateway.sender_registry import SenderDirectory, SenderRegistry
from gateway.settings import Settings


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=2)
    yield engine
    engine.dispose()


def test_cli_add_list_disable_enable_remove(
    database_url: str, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    url = ["--database-url", database_url]
    sender = ["--application", "HIS_VN", "--facility", "BVDK_HN"]
    assert cli(["senders", "add", *url, *sender, "--network", "10.20.0.0/16", "192.0.2.7", "--network",
                "10.20.1.0/24", "--certificate-cn", "his-bvdk"]) == 0  # fmt: skip
    assert cli(["senders", "list", *url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == (
        "HIS_VN\tBVDK_HN\tenabled\tnetworks=10.20.0.0/16,192.0.2.7/32,10.20.1.0/24\tcn=his-bvdk"
    )
    assert cli(["senders", "disable", *url, *sender]) == 0
    assert SenderRegistry(engine).get("HIS_VN", "BVDK_HN") == RegisteredSender(
        "HIS_VN",
        "BVDK_HN",
        tuple(ipaddress.ip_network(n) for n in ("10.20.0.0/16", "192.0.2.7/32", "10.20.1.0/24")),
        "his-bvdk",
        False,
    )
    assert cli(["senders", "enable", *url, *sender]) == 0
    assert SenderRegistry(engine).list()[0].enabled
    assert cli(["senders", "remove", *url, *sender]) == 0
    assert SenderRegistry(engine).list() == []
    assert cli(["senders", "disable", *url, *sender]) == 1  # no longer registered
    assert "not registered" in capsys.readouterr().err


def test_add_refuses_a_sender_tied_to_nothing(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["senders", "add", "--database-url", database_url, "--application", "HIS_VN", "--facility", "X"]
    assert cli(args) == 2
    assert "--network or --certificate-cn" in capsys.readouterr().err
    assert cli([*args, "--network", "not-a-network"]) == 2
    assert cli([*args, "--network", "10.0.0.0/8"]) == 0
    assert cli([*args, "--certificate-cn", "again"]) == 2  # already registered
    assert "already registered" in capsys.readouterr().err


def test_registry_validation(engine: Engine) -> None:
    registry = SenderRegistry(engine)
    with pytest.raises(InvalidInput):
        registry.add(" ", "FAC", networks=["10.0.0.0/8"])
    with pytest.raises(InvalidInput):
        registry.add("APP", "FAC", certificate_cn="  ")
    added = registry.add("APP", "FAC", networks=["10.0.0.5/24"])  # host bits: normalised, not refused
    assert added.networks == (ipaddress.ip_network("10.0.0.0/24"),)


def test_directory_reloads_after_refresh_and_not_before(engine: Engine) -> None:
    now = [100.0]
    registry = SenderRegistry(engine)
    directory = SenderDirectory(engine, refresh_s=2.0, clock=lambda: now[0])
    assert directory.lookup("APP", "FAC") is None
    registry.add("APP", "FAC", networks=["10.0.0.0/8"])
    now[0] += 1.9
    assert directory.lookup("APP", "FAC") is None  # still the snapshot: one read per refresh, not per message
    now[0] += 0.1
    found = directory.lookup("APP", "FAC")
    assert found is not None and found.enabled
    registry.set_enabled("APP", "FAC", False)
    now[0] += 2.0
    after = directory.lookup("APP", "FAC")
    assert after is not None and not after.enabled
    assert directory.count() == 1


def test_registry_refusal_reasons() -> None:
    net = RegisteredSender("APP", "FAC", (ipaddress.ip_network("10.0.0.0/8"),), None, True)
    cn = RegisteredSender("APP", "TLS", (), "his-a", True)
    off = RegisteredSender("APP", "OFF", (ipaddress.ip_network("0.0.0.0/0"),), None, False)
    senders = {(s.application, s.facility): s for s in (net, cn, off)}

    def lookup(app: str, fac: str) -> RegisteredSender | None:
        return senders.get((app, fac))

    def why(fac: str, peer: str, identity: str | None = None, *, replay: bool = False) -> str | None:
        return registry_refusal(lookup, "APP", fac, peer, identity, replay=replay)

    assert why("FAC", "10.1.2.3:4000") is None
    assert why("FAC", "[::ffff:10.1.2.3]:4000") is None  # IPv4-mapped IPv6 peer
    assert why("FAC", "11.1.2.3:4000") == "peer"
    assert why("FAC", "11.1.2.3:4000", replay=True) is None  # peer checked at receipt
    assert why("FAC", "", "his-a") == "peer"  # a CN only counts for a sender registered with it
    assert why("TLS", "10.1.2.3:4000", "his-a") is None
    assert why("TLS", "10.1.2.3:4000", "his-b") == "peer"
    assert why("TLS", "10.1.2.3:4000", None) == "peer"
    assert why("OFF", "10.1.2.3:4000") == "disabled"
    assert why("OFF", "10.1.2.3:4000", replay=True) == "disabled"
    assert why("NOPE", "10.1.2.3:4000") == "unknown"


def test_peer_address_and_receipt_refusals() -> None:
    assert peer_address("127.0.0.1:5000") == ipaddress.ip_address("127.0.0.1")
    assert peer_address("::1:5000") == ipaddress.ip_address("::1")
    assert peer_address("") is None and peer_address("host.example:1") is None
    assert refused_at_receipt("sender not registered: A^B may not send on this connection (at MSH-3)")
    assert refused_at_receipt("sender not allowed: A^B for this connection (at MSH-3)")
    assert refused_at_receipt("sender A^B is not allowed for this connection (at MSH-3)")  # older rows
    assert refused_at_receipt("sender not checked: sender registry unavailable; please retry")
    assert not refused_at_receipt("sender disabled or removed since receipt: A^B; enable it to replay")
    assert not refused_at_receipt("invalid birth date (at PID-7)") and not refused_at_receipt(None)


def test_sender_commands_are_audited(
    database_url: str, engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Who may write patient records is security configuration: every change leaves a Security Alert."""
    key_file = tmp_path / "audit.pem"
    monkeypatch.setenv("CAREBRIDGE_AUDIT_KEY_FILE", str(key_file))
    Runtime.create(
        Settings(database_url=database_url, audit=AuditSettings(key_file=str(key_file))), migrate=False
    ).close()
    url = ["--database-url", database_url]
    sender = ["--application", "HIS_VN", "--facility", "BVDK_HN"]
    assert cli(["senders", "add", *url, *sender, "--network", "10.20.0.0/16"]) == 0
    assert cli(["senders", "add", *url, *sender, "--network", "10.20.0.0/16"]) == 2  # already registered
    assert cli(["senders", "disable", *url, *sender]) == 0
    assert cli(["senders", "remove", *url, *sender]) == 0
    assert cli(["senders", "remove", *url, *sender]) == 1
    with engine.connect() as conn:
        events = [json.loads(bytes(r[0])) for r in conn.execute(select(audit_event.c.content))]
    alerts = [
        (e["subtype"][0]["code"], e["outcome"], e["outcomeDesc"])
        for e in events
        if e["subtype"][0]["code"].startswith("senders-")
    ]
    assert alerts == [
        ("senders-add", "0", "sender HIS_VN^BVDK_HN: added"),
        ("senders-add", "8", "sender HIS_VN^BVDK_HN: refused"),
        ("senders-disable", "0", "sender HIS_VN^BVDK_HN: disabled"),
        ("senders-remove", "0", "sender HIS_VN^BVDK_HN: removed"),
        ("senders-remove", "8", "sender HIS_VN^BVDK_HN: refused: not registered"),
    ]
