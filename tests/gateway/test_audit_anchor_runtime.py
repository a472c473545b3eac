"""``carebridge serve`` shutdown (Runtime.close) signs and anchors the audit head; the metrics say so."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.core import Metric

from audit import VerifyKey, build_event, read_anchors, verify_engine
from common import AuditSettings
from fhir_store import RequestContext, make_engine, now_us
from gateway.audit_metrics import AnchorCollector
from gateway.runtime import Runtime
from gateway.settings import Settings

CTX = RequestContext(request_id="r-1", client_id="ops", role="operator", channel="internal")


def test_serve_shutdown_checkpoint_is_anchored(database_url: str, tmp_path: Path) -> None:
    audit = AuditSettings(
        key_file=str(tmp_path / "audit.pem"),
        anchor_file=str(tmp_path / "anchors" / "audit-anchors.jsonl"),
        anchor_url="http://127.0.0.1:9/unreachable",  # discard port: every POST fails
        anchor_timeout_s=1.0,
        checkpoint_interval_s=3600.0,
    )
    runtime = Runtime.create(Settings(database_url=database_url, audit=audit), migrate=False)
    try:
        event = build_event(context=CTX, event_type="110114", subtype=None, recorded_us=now_us())
        seq = runtime.audit.append([event])
    finally:
        runtime.close()
    anchors = read_anchors(audit.anchor_path)
    assert anchors[-1].seq == seq
    metrics: dict[str, Metric] = {m.name: m for m in AnchorCollector(runtime.audit).collect()}
    assert metrics["carebridge_audit_anchor_post_failures"].samples[0].value >= 1
    engine = make_engine(database_url, pool_size=1)
    try:
        key = VerifyKey(runtime.audit.writer.keys.verify_key.public_key)
        result = verify_engine(engine, trusted=[key], anchors=anchors)
    finally:
        engine.dispose()
    assert result.ok and result.unanchored == 0, result
