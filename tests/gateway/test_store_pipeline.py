"""The store hook chain: declared once (``gateway.store_pipeline``), run by the store in exactly that order."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Literal

import pytest
from sqlalchemy import Connection

from consent.purposes import ConsentIntakeHook
from consent.retention import RetentionHoldHook
from fhir_store.model import Create, RequestContext, ResourceChange, StoredResource
from fhir_store.pipeline import HookPipeline, Stage
from fhir_store.write_path import WriteUnit
from gateway.auth.policy import ScopePolicyHook
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.fhir_store.conftest import patient

DECLARED = [
    ("scope-policy", "pre-commit"),
    ("retention-hold", "pre-commit"),
    ("consent-intake", "pre-commit"),
    ("audit", "group"),
    ("tombstone", "group"),
    ("crm-outbox", "group"),
    ("scope-policy", "access"),
    ("audit", "access"),
]
CHANGE_STAGES = [(name, phase) for name, phase in DECLARED if phase != "access"]
ACCESS_STAGES = [(name, phase) for name, phase in DECLARED if phase == "access"]

Call = tuple[str, str, str, str]


@pytest.fixture
def runtime(database_url: str) -> Iterator[Runtime]:
    rt = Runtime.create(Settings(database_url=database_url), migrate=False)
    yield rt
    rt.close()


class Recording:
    """Wraps one stage's real hook: notes (stage, phase, method, request ids), then delegates."""

    def __init__(self, stage: Stage, calls: list[Call]) -> None:
        self.stage = stage
        self.calls = calls

    def _note(self, method: str, request_ids: str) -> None:
        self.calls.append((self.stage.name, self.stage.phase, method, request_ids))

    def on_changes(
        self, conn: Connection, changes: Sequence[ResourceChange], context: RequestContext
    ) -> None:
        self._note("on_changes", context.request_id)
        self.stage.hook.on_changes(conn, changes, context)  # type: ignore[union-attr]

    def on_group_changes(
        self, conn: Connection, batches: Sequence[tuple[Sequence[ResourceChange], RequestContext]]
    ) -> None:
        self._note("on_group_changes", "+".join(context.request_id for _, context in batches))
        self.stage.hook.on_group_changes(conn, batches)  # type: ignore[union-attr]

    def on_access(
        self,
        conn: Connection,
        action: Literal["read", "vread", "search", "history"],
        resources: Sequence[StoredResource],
        context: RequestContext,
        query: str | None,
    ) -> None:
        self._note("on_access", context.request_id)
        self.stage.hook.on_access(conn, action, resources, context, query)  # type: ignore[union-attr]


def _hl7(request_id: str) -> RequestContext:
    return RequestContext(request_id, client_id="his", role="his_integration", channel="hl7")


def test_the_runtime_declares_the_whole_chain_by_name_and_phase(runtime: Runtime) -> None:
    pipeline = runtime.store.pipeline
    assert pipeline.names() == DECLARED
    hooks = {(s.name, s.phase): s.hook for s in pipeline}
    assert hooks[("audit", "group")] is runtime.audit is hooks[("audit", "access")]
    assert hooks[("crm-outbox", "group")] is runtime.crm.hook
    assert hooks[("consent-intake", "pre-commit")] is runtime.crm.intake
    assert isinstance(hooks[("scope-policy", "pre-commit")], ScopePolicyHook)
    assert isinstance(hooks[("retention-hold", "pre-commit")], RetentionHoldHook)
    assert hooks[("scope-policy", "pre-commit")] is hooks[("scope-policy", "access")]
    # the one stage that changes what later stages see says so, and comes before the outbox
    assert pipeline.rewriters() == ["tombstone"]
    assert pipeline.find(ConsentIntakeHook) is runtime.crm.intake


def test_the_store_runs_the_declared_stages_in_order(runtime: Runtime) -> None:
    calls: list[Call] = []
    store = runtime.store
    store.pipeline = HookPipeline(tuple(Stage(s.name, s.phase, Recording(s, calls)) for s in store.pipeline))

    created = store.transact([Create(patient())], _hl7("w1"))[0].stored
    assert created is not None
    assert calls == [(name, phase, "on_changes", "w1") for name, phase in CHANGE_STAGES]

    calls.clear()
    store.transact_group(
        [WriteUnit([Create(patient())], _hl7("g1")), WriteUnit([Create(patient())], _hl7("g2"))]
    )
    expected: list[Call] = []
    for name, phase in CHANGE_STAGES:  # stage by stage; a pre-commit stage unit by unit
        if phase == "group":
            expected.append((name, phase, "on_group_changes", "g1+g2"))
        else:
            expected += [(name, phase, "on_changes", "g1"), (name, phase, "on_changes", "g2")]
    assert calls == expected

    calls.clear()
    store.read("Patient", created.id, _hl7("r1"))
    assert calls == [(name, phase, "on_access", "r1") for name, phase in ACCESS_STAGES]


class _Changes:
    def on_changes(self, conn: Any, changes: Any, context: Any) -> None: ...


def test_a_pipeline_refuses_a_stage_its_hook_cannot_serve() -> None:
    with pytest.raises(TypeError, match="group stage"):
        HookPipeline.of(("plain", "group", _Changes()))
    with pytest.raises(TypeError, match="access stage"):
        HookPipeline.of(("plain", "access", _Changes()))
    with pytest.raises(ValueError, match="declared twice"):
        HookPipeline.of(("plain", "pre-commit", _Changes()), ("plain", "pre-commit", _Changes()))
    assert HookPipeline.of(("plain", "pre-commit", _Changes())).without("plain").names() == []
