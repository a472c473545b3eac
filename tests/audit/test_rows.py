"""The rendered hot path writes exactly the row the general path (event dict + orjson) would."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit.codes import ACTIONS
from audit.events import build_event
from audit.rows import _HOLE, Prepared, _template, index_fields, prepare, render
from audit.store_events import access_row
from fhir_store.model import RequestContext, StoredResource
from tests.audit.conftest import CTX

_TEXT = st.text(max_size=80)
_ID = st.one_of(st.text(min_size=0, max_size=140), st.from_regex(r"[A-Za-z0-9\-.]{1,64}", fullmatch=True))

contexts = st.builds(
    RequestContext,
    request_id=st.one_of(st.just(""), _TEXT),
    client_id=_TEXT,
    role=_TEXT,
    channel=st.sampled_from(["rest", "hl7", "internal", "crm"]),
    source_address=st.one_of(st.none(), st.just("10.1.2.3"), st.just("[::1]:8080"), _TEXT),
    purpose_of_use=st.one_of(st.none(), st.just("TREAT"), st.just("http://x.example/cs|HOPERAT"), _TEXT),
    patient_ids=st.lists(_ID, max_size=3).map(tuple),
)
kinds = st.fixed_dictionaries(
    {
        "event_type": st.sampled_from(["rest", "110107", "110106", "weird-type"]),
        "subtype": st.one_of(st.none(), st.just(""), st.sampled_from(sorted(ACTIONS)), _TEXT),
        "action": st.one_of(st.none(), st.sampled_from("CRUDE")),
        "outcome": st.sampled_from(["0", "4", "8", "12"]),
    }
)


def _general(prepared: Prepared, context: RequestContext, kind: dict[str, Any], **inputs: Any) -> Prepared:
    """The general path for the same event (same id: the renderer drew a fresh one)."""
    event_id = orjson.loads(prepared.content)["id"]
    return prepare(build_event(context=context, event_id=event_id, **kind, **inputs))


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(
    context=contexts,
    kind=kinds,
    references=st.lists(_ID.map(lambda i: f"Encounter/{i}/_history/2"), max_size=3),
    patient_ids=st.lists(_ID, max_size=4),
    query=st.one_of(st.none(), _TEXT),
    recorded_us=st.integers(0, 4_102_444_800_000_000),
)
def test_render_equals_the_general_path(
    context: RequestContext,
    kind: dict[str, Any],
    references: list[str],
    patient_ids: list[str],
    query: str | None,
    recorded_us: int,
) -> None:
    inputs: dict[str, Any] = {
        "references": references,
        "patient_ids": patient_ids,
        "query": query,
        "recorded_us": recorded_us,
    }
    rendered = render(context, **kind, **inputs)
    general = _general(rendered, context, kind, **inputs)
    assert rendered.content == general.content
    assert rendered.columns == general.columns
    assert rendered.patient_ids == general.patient_ids
    # what the verifier derives from the stored bytes
    assert index_fields(orjson.loads(rendered.content)).columns() == rendered.columns


def test_a_caller_value_equal_to_the_placeholder_takes_the_general_path() -> None:
    context = RequestContext("req-1", client_id=_HOLE, role=_HOLE, channel="rest")
    assert _template(_HOLE, _HOLE, "rest", None, None, "rest", "read", None, "0", True) is None
    inputs: dict[str, Any] = {"recorded_us": 1, "references": ["Patient/p/_history/1"]}
    rendered = render(context, "rest", "read", **inputs)
    assert orjson.loads(rendered.content)["agent"][0]["altId"] == _HOLE
    assert rendered == _general(rendered, context, {"event_type": "rest", "subtype": "read"}, **inputs)


def test_access_rows_name_the_versioned_targets_and_the_patients() -> None:
    encounter = StoredResource(
        "Encounter",
        "e1",
        3,
        0,
        False,
        orjson.dumps({"resourceType": "Encounter", "subject": {"reference": "Patient/p1"}}),
    )
    read = orjson.loads(access_row(5, CTX, "read", [encounter], None).content)
    assert [e["what"].get("reference") for e in read["entity"]] == [
        "Encounter/e1/_history/3",
        "Patient/p1",
        None,  # the request id entity
    ]
    search = access_row(5, CTX, "search", [encounter], "Encounter?subject=p1")
    assert orjson.loads(search.content)["subtype"][0]["code"] == "search-type"
    assert search.columns[7:9] == ("p1", "Patient/p1")  # patient_id, entity
