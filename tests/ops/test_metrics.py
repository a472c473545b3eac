"""``/metrics`` scraped from a real ``carebridge serve`` after good and bad HL7 messages (issue #7 §2).

A subprocess rather than an in-process app: it checks the wiring the operator
gets (the MLLP listener and the HTTP app of one runtime share the HL7
counters) and the DB-derived gauges read at scrape time.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from demo.his_day import SAMPLES, Demo, record_consents, running_carebridge

GOOD = ("adt_a04_register_outpatient.hl7", "siu_s12_new_appointment.hl7")
BAD = ("bad_invalid_birthdate.hl7", "bad_unsupported_trigger.hl7", "bad_no_msh.hl7")
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)$")


def scrape(demo: Demo) -> dict[str, float]:
    """``name{labels}`` → value (labels as rendered, sorted by the client library)."""
    response = httpx.get(f"{demo.base}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for line in response.text.splitlines():
        match = _SAMPLE.match(line)
        if match and not line.startswith("#"):
            samples[match[1] + (match[2] or "")] = float(match[3])
    return samples


def send(demo: Demo, *names: str) -> list[str]:
    result = demo.cli(
        "hl7", "send", "--port", str(demo.mllp_port), *(str(SAMPLES / n) for n in names), check=False
    )
    return [line.split()[1] for line in result.stdout.splitlines()]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Demo, subprocess.Popen[bytes]]]:
    with running_carebridge(Path(tmp_path_factory.mktemp("metrics"))) as running:
        yield running


@pytest.mark.slow
def test_hl7_counters_and_journal_gauges_move(server: tuple[Demo, subprocess.Popen[bytes]]) -> None:
    demo, _ = server
    before = scrape(demo)
    assert before["carebridge_metrics_database_up"] == 1.0
    assert before["carebridge_hl7_journal_backlog"] == 0.0
    # the module's server is shared: counters are compared with what other tests left, not with zero

    def delta(key: str, now: dict[str, float] | None = None) -> float:
        return (after if now is None else now).get(key, 0.0) - before.get(key, 0.0)

    assert send(demo, *GOOD) == ["AA", "AA"]
    assert send(demo, *BAD) == ["AE", "AR", "AR"]
    after = scrape(demo)

    assert delta('carebridge_hl7_messages_received_total{message_type="ADT^A04"}') == 2.0  # good + bad
    assert delta('carebridge_hl7_messages_received_total{message_type="SIU^S12"}') == 1.0
    assert delta('carebridge_hl7_messages_received_total{message_type="ORU^R01"}') == 1.0
    assert delta('carebridge_hl7_messages_received_total{message_type="unknown"}') == 1.0  # no MSH
    assert delta('carebridge_hl7_messages_acked_total{message_type="ADT^A04"}') == 1.0
    assert delta('carebridge_hl7_messages_acked_total{message_type="SIU^S12"}') == 1.0
    assert delta('carebridge_hl7_messages_nacked_total{ack_code="AE",message_type="ADT^A04"}') == 1.0
    assert delta('carebridge_hl7_messages_nacked_total{ack_code="AR",message_type="ORU^R01"}') == 1.0
    assert delta('carebridge_hl7_messages_nacked_total{ack_code="AR",message_type="unknown"}') == 1.0

    # DB-derived: one more failed (AE) and two more rejected (AR) rows; nothing left 'received'
    assert delta('carebridge_hl7_journal_messages{status="failed"}') == 1.0
    assert delta('carebridge_hl7_journal_messages{status="rejected"}') == 2.0
    assert after['carebridge_hl7_journal_messages{status="received"}'] == 0.0
    assert after["carebridge_hl7_journal_backlog"] == 0.0
    # every applied message wrote audit events; the chain grew
    assert after["carebridge_audit_chain_length"] > before["carebridge_audit_chain_length"]
    assert "carebridge_audit_last_checkpoint_seq" in after

    # a duplicate delivery is received and answered again (with the stored AA), not re-applied
    assert send(demo, GOOD[0]) == ["AA"]
    again = scrape(demo)
    assert delta('carebridge_hl7_messages_acked_total{message_type="ADT^A04"}', again) == 2.0
    assert again["carebridge_audit_chain_length"] >= after["carebridge_audit_chain_length"]
    # HTTP histograms are still there next to the new families
    assert any(k.startswith("carebridge_http_request_duration_seconds_bucket") for k in again)


@pytest.mark.slow
def test_reused_control_id_is_counted(server: tuple[Demo, subprocess.Popen[bytes]], tmp_path: Path) -> None:
    """An A08 carrying the A04's MSH-10 (the HIS counter restarted) is processed and counted."""
    demo, _ = server
    assert send(demo, GOOD[0]) == ["AA"]  # journaled (or already, as HIS000001)
    reused = tmp_path / "a08_reused_control_id.hl7"
    a08 = (SAMPLES / "adt_a08_update_patient.hl7").read_bytes()
    reused.write_bytes(a08.replace(b"|HIS000003|", b"|HIS000001|", 1))
    result = demo.cli("hl7", "send", "--port", str(demo.mllp_port), str(reused), check=False)
    assert [line.split()[1:3] for line in result.stdout.splitlines()] == [["AA", "HIS000001"]]
    assert scrape(demo)['carebridge_hl7_control_id_reused_total{action="process"}'] == 1.0


@pytest.mark.slow
def test_crm_subscription_backlog_while_the_receiver_is_down(
    server: tuple[Demo, subprocess.Popen[bytes]],
) -> None:
    demo, _ = server
    token = demo.token("crm-main", "crm")
    crm = httpx.Client(
        base_url=f"{demo.base}/crm/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10
    )
    # a receiver that is not there: every POST fails, the events wait (retries with backoff)
    response = crm.post("/subscriptions", json={"url": "http://127.0.0.1:9/hook"})
    assert response.status_code == 201, response.text
    key = f'{{crm="crm-main",subscription="{response.json()["id"]}"}}'
    idle = scrape(demo)
    assert idle[f"carebridge_crm_webhook_backlog{key}"] == 0.0
    assert idle[f"carebridge_crm_dead_letters{key}"] == 0.0

    assert send(demo, "adt_a28_add_person.hl7", "adt_a04_register_outpatient.hl7") == ["AA", "AA"]
    his = httpx.Client(
        base_url=f"{demo.base}/fhir",
        headers={"Authorization": f"Bearer {demo.token('his-metrics', 'his_integration')}"},
        timeout=10,
    )
    record_consents(his)  # consent → consent.changed / patient.upserted events for crm-main
    time.sleep(0.3)
    busy = scrape(demo)
    assert busy['carebridge_crm_outbox_head_seq{crm="crm-main"}'] >= 4.0
    assert busy[f"carebridge_crm_webhook_backlog{key}"] >= 4.0
    assert busy[f"carebridge_crm_webhook_oldest_pending_age_seconds{key}"] > 0.0
    assert busy[f"carebridge_crm_dead_letters{key}"] == 0.0  # 10 attempts before giving up
    assert busy["carebridge_crm_webhooks_delivered_total"] == 0.0
    # every failed POST attempt lands in the delivery latency histogram
    failed_attempts = 'carebridge_crm_webhook_delivery_seconds_count{outcome="error"}'
    deadline = time.monotonic() + 10
    while scrape(demo).get(failed_attempts, 0.0) < 1.0:
        assert time.monotonic() < deadline, "no webhook attempt was observed"
        time.sleep(0.2)
