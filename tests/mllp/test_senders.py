"""Registered senders over MLLP (issue #16 item 1), on SQLite and PostgreSQL, with open mode off.

The attack: anyone who could reach the MLLP port sent an ADT^A08 with
``MSH-3 ATTACKER`` and rewrote a patient's phone.  Now MSH-3/MSH-4 must be a
registered, enabled sender (``carebridge senders add``) and the connection must
be that sender's (a registered network, or the verified TLS certificate CN);
anything else is AR with ERR 103 at MSH-3, journaled ``rejected``, audited and
counted, and changes nothing.  ``CAREBRIDGE_MLLP_OPEN=true`` accepts anyone and
says so loudly at start.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import select

from audit.schema import audit_event
from common.identifiers import mrn_system
from fhir_store import journal
from fhir_store.schema import hl7_journal
from fhir_store.writer import find_identifier_owner
from gateway.cli import main as cli
from gateway.ingest import Ingestor
from gateway.metrics import OpsCollector
from gateway.mllp.client import MllpClient
from gateway.mllp.tls import client_context
from gateway.sender_registry import REFRESH_S, SenderDirectory, SenderRegistry
from gateway.settings import Settings
from tests.mllp.conftest import RunningServer, ServeProcess, a04, sample
from tests.mllp.test_tls import Ca, _client, _server_ctx

A04 = sample("adt_a04_register_outpatient")  # HIS_VN^BVDK_HN, MRN BN000123, phone 0912345678
# The attack: the sample A08 (phone 0977888999) under another MSH-3, sent from the same host.
FORGED_A08 = sample("adt_a08_update_patient").replace(b"|HIS_VN|BVDK_HN|", b"|ATTACKER|BVDK_HN|", 1)


@pytest.fixture
def tls_ca(tmp_path: Path) -> Ca:
    return Ca(tmp_path)


def closed(start_server: Callable[..., RunningServer], **kwargs: object) -> RunningServer:
    return start_server(mllp_open=False, **kwargs)


def register(database_url: str, *args: str) -> None:
    assert cli(["senders", "add", "--database-url", database_url, *args]) == 0


def phone(server: RunningServer) -> str:
    patient = server.owner("Patient", mrn_system("BVDK_HN"), "BN000123")
    assert patient is not None
    return str(patient["telecom"][0]["value"])


def journal_rows(server: RunningServer) -> list[tuple[str, str, str, str]]:
    j = hl7_journal
    stmt = select(j.c.sending_application, j.c.status, j.c.ack_code, j.c.error).order_by(j.c.id)
    with server.runtime.engine.connect() as conn:
        return [(str(r[0]), str(r[1]), str(r[2]), str(r[3])) for r in conn.execute(stmt)]


def message_events(server: RunningServer) -> list[dict[str, object]]:
    with server.runtime.engine.connect() as conn:
        events = [orjson.loads(r[0]) for r in conn.execute(select(audit_event.c.content))]
    return [e for e in events if e["type"]["code"] == "110107"]


def test_forged_a08_from_an_unregistered_sender_is_refused_journaled_audited_counted(
    start_server: Callable[..., RunningServer], database_url: str
) -> None:
    register(database_url, "--application", "HIS_VN", "--facility", "BVDK_HN", "--network", "127.0.0.1")
    mllp = closed(start_server)
    with MllpClient("127.0.0.1", mllp.port) as client:
        registered = client.exchange(A04)
        forged = client.exchange(FORGED_A08)
    assert registered is not None and registered.code == "AA"
    assert forged is not None and forged.code == "AR"
    assert forged.text.startswith("sender not registered")
    err = next(line for line in forged.raw.split(b"\r") if line.startswith(b"ERR|"))
    assert b"|MSH^1^3|103^" in err  # HL7 table 0357 "table value not found" at MSH-3

    assert phone(mllp) == "+84912345678"  # the A08 changed nothing
    assert journal_rows(mllp)[-1][:3] == ("ATTACKER", journal.REJECTED, "AR")
    refused = [e for e in message_events(mllp) if e["outcome"] == "8"]
    assert len(refused) == 1 and "ATTACKER" in json.dumps(refused[0])
    assert mllp.server.ingestor.metrics.refused_snapshot() == {"unknown": 1}
    registry = CollectorRegistry()
    registry.register(OpsCollector(mllp.runtime.engine, mllp.server.ingestor.metrics))
    assert 'carebridge_hl7_senders_refused_total{reason="unknown"} 1.0' in generate_latest(registry).decode()


def test_the_check_comes_before_the_duplicate_lookup(
    start_server: Callable[..., RunningServer], database_url: str
) -> None:
    """A registered sender's message replayed from a host it may not use gets AR, not the stored AA."""
    register(database_url, "--application", "HIS_VN", "--facility", "BVDK_HN", "--network", "127.0.0.1")
    mllp = closed(start_server)
    with MllpClient("127.0.0.1", mllp.port) as client:
        first = client.exchange(A04)
    assert first is not None and first.code == "AA"
    assert SenderRegistry(mllp.runtime.engine).remove("HIS_VN", "BVDK_HN")
    later = closed(start_server)  # a fresh directory: sees the removal at once
    with MllpClient("127.0.0.1", later.port) as client:
        again = client.exchange(A04)
    assert again is not None and again.code == "AR" and again.raw != first.raw


def test_a_sender_from_outside_its_networks_is_refused(
    start_server: Callable[..., RunningServer], database_url: str
) -> None:
    register(
        database_url,
        "--application",
        "HIS_VN",
        "--facility",
        "BVDK_HN",
        "--network",
        "10.20.0.0/16",
        "192.0.2.7",
    )
    mllp = closed(start_server)
    with MllpClient("127.0.0.1", mllp.port) as client:
        ack = client.exchange(a04("NET1", "NET-1"))
    assert ack is not None and ack.code == "AR" and ack.text.startswith("sender not registered")
    assert mllp.owner("Patient", mrn_system("BVDK_HN"), "NET-1") is None
    assert mllp.server.ingestor.metrics.refused_snapshot() == {"peer": 1}


def test_certificate_cn_match_is_accepted_over_mutual_tls(
    start_server: Callable[..., RunningServer], database_url: str, tls_ca: Ca
) -> None:
    ca = tls_ca
    register(database_url, "--application", "HIS_VN", "--facility", "BVDK_HN", "--certificate-cn", "his-bvdk")
    mllp = closed(start_server, ssl_context=_server_ctx(ca, mutual=True))
    cert, key = ca.issue("his-bvdk", server=False)
    with _client(mllp.port, client_context(ca.path, cert, key)) as client:
        accepted = client.exchange(a04("CN1", "CN-1"))
        other_facility = client.exchange(a04("CN2", "CN-2", fac="OTHER"))
    assert accepted is not None and accepted.code == "AA"
    assert other_facility is not None and other_facility.code == "AR"
    stranger_cert, stranger_key = ca.issue("his-other", server=False)
    with _client(mllp.port, client_context(ca.path, stranger_cert, stranger_key)) as client:
        stranger = client.exchange(a04("CN3", "CN-3"))
    assert stranger is not None and stranger.code == "AR"
    assert mllp.server.ingestor.metrics.refused_snapshot() == {"unknown": 1, "peer": 1}


def test_disable_takes_effect_in_the_running_server_without_restart(
    start_server: Callable[..., RunningServer], database_url: str
) -> None:
    """``senders disable`` from another process; the server's next reload (≤ REFRESH_S later) refuses."""
    now = [0.0]
    register(database_url, "--application", "HIS_VN", "--facility", "BVDK_HN", "--network", "127.0.0.0/8")
    mllp = closed(start_server)
    directory = SenderDirectory(mllp.runtime.engine, clock=lambda: now[0])
    mllp.server.ingestor.senders = directory.lookup
    with MllpClient("127.0.0.1", mllp.port) as client:
        before = client.exchange(a04("D1", "D-1"))
        assert cli(["senders", "disable", "--database-url", database_url, "--application", "HIS_VN",
                    "--facility", "BVDK_HN"]) == 0  # fmt: skip
        now[0] += REFRESH_S
        after = client.exchange(a04("D2", "D-2"))
        assert cli(["senders", "enable", "--database-url", database_url, "--application", "HIS_VN",
                    "--facility", "BVDK_HN"]) == 0  # fmt: skip
        now[0] += REFRESH_S
        enabled = client.exchange(a04("D3", "D-3"))
    assert REFRESH_S <= 5  # the promise: a change reaches every running server within 5 s
    assert before is not None and before.code == "AA"
    assert after is not None and after.code == "AR"
    assert enabled is not None and enabled.code == "AA"
    assert mllp.server.ingestor.metrics.refused_snapshot() == {"disabled": 1}


def test_replay_never_applies_a_refused_or_disabled_senders_message(database_url: str) -> None:
    """Registering a sender later does not launder a forged message; a disabled sender's rows wait."""
    from gateway.runtime import Runtime

    closed_settings = Settings(database_url=database_url)  # CAREBRIDGE_MLLP_OPEN defaults to false
    runtime = Runtime.create(closed_settings, migrate=False)
    try:
        registry = SenderRegistry(runtime.engine)
        registry.add("HIS_VN", "BVDK_HN", networks=["10.0.0.0/8"])
        ingestor = Ingestor(runtime.store, closed_settings)
        forged = ingestor.handle(a04("F1", "F-1", app="LAB"), peer="10.1.2.3:4000")
        spoofed = ingestor.handle(a04("F2", "F-2"), peer="203.0.113.9:4000")  # registered name, wrong host
        failed = ingestor.handle(sample("bad_invalid_birthdate"), peer="10.1.2.3:4000")
        assert (forged.ack_code, spoofed.ack_code, failed.ack_code) == ("AR", "AR", "AE")

        registry.add("LAB", "BVDK_HN", networks=["203.0.113.0/24", "10.0.0.0/8"])
        for refused in (forged, spoofed):
            assert refused.journal_id is not None
            again = ingestor.replay(refused.journal_id)
            assert (again.ack_code, again.status) == ("AR", journal.REJECTED)
        with runtime.engine.connect() as conn:
            blind = runtime.store.cipher.blind("F-1")
            assert find_identifier_owner(conn, "Patient", mrn_system("BVDK_HN"), blind) is None

        assert failed.journal_id is not None
        registry.set_enabled("HIS_VN", "BVDK_HN", False)
        later = SenderDirectory(runtime.engine)  # what a process started now sees
        replayer = Ingestor(runtime.store, closed_settings, senders=later.lookup)
        disabled = replayer.replay(failed.journal_id)
        assert disabled.ack_code == "AR" and (disabled.error or "").startswith("sender disabled or removed")
        registry.set_enabled("HIS_VN", "BVDK_HN", True)
        enabled = Ingestor(runtime.store, closed_settings).replay(failed.journal_id)
        assert enabled.ack_code == "AE"  # the sender passes again; the birth date is still invalid
    finally:
        runtime.close()


def test_open_mode_accepts_any_sender_and_warns_at_start(
    serve: Callable[..., ServeProcess], database_url: str, tmp_path: Path
) -> None:
    process = serve(database_url, {"CAREBRIDGE_MLLP_OPEN": "true"})
    with MllpClient("127.0.0.1", process.port) as client:
        ack = client.exchange(a04("OPEN1", "OPEN-1", app="ANYONE", fac="ANYWHERE"))
    assert ack is not None and ack.code == "AA"
    warnings = [e for e in process.log_events() if str(e.get("event", "")).startswith("MLLP OPEN MODE")]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"


def test_closed_by_default_refuses_unregistered_senders_and_does_not_warn(
    serve: Callable[..., ServeProcess], database_url: str
) -> None:
    process = serve(database_url, {"CAREBRIDGE_MLLP_OPEN": "false"})
    with MllpClient("127.0.0.1", process.port) as client:
        ack = client.exchange(a04("SHUT1", "SHUT-1"))
    assert ack is not None and ack.code == "AR" and ack.text.startswith("sender not registered")
    assert not [e for e in process.log_events() if str(e.get("event", "")).startswith("MLLP OPEN MODE")]
