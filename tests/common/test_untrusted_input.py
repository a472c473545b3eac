"""The byte-level depth measure agrees with a parse, and NULs are found wherever they hide."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from common import InvalidInput, check_json_body, json_depth_exceeds, refuse_nul

_TEXT = st.text(alphabet=st.sampled_from(list('ab"\\{}[]:,ệ\t')), max_size=6)
_JSON: Any = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | _TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_TEXT, children, max_size=3),
    max_leaves=40,
)


def _depth(node: Any) -> int:
    if isinstance(node, dict):
        return 1 + max((_depth(v) for v in node.values()), default=0)
    if isinstance(node, list):
        return 1 + max((_depth(v) for v in node), default=0)
    return 0


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(document=_JSON, limit=st.integers(min_value=0, max_value=6))
def test_depth_measured_on_bytes_matches_the_parsed_document(document: Any, limit: int) -> None:
    for body in (orjson.dumps(document), json.dumps(document, indent=1).encode()):
        assert json_depth_exceeds(body, limit) == (_depth(document) > limit)


def test_deep_documents_are_refused_at_the_first_element_too_deep() -> None:
    body = b'{"resourceType":"Patient","extension":' + b"[" * 70 + b"]" * 70 + b"}"
    with pytest.raises(InvalidInput) as caught:
        check_json_body(body, 64)
    assert caught.value.location == "Patient.extension" + "[0]" * 63
    check_json_body(body, 71)  # within a higher limit


def test_deeper_than_the_parser_can_go_is_still_a_400_at_the_body() -> None:
    with pytest.raises(InvalidInput) as caught:
        check_json_body(b"[" * 5000 + b"]" * 5000, 64)
    assert caught.value.location == "body"


@pytest.mark.parametrize(
    ("body", "location"),
    [
        (b'{"resourceType":"Patient","name":[{"given":["a","b\\u0000"]}]}', "Patient.name[0].given[1]"),
        (b'{"a":{"b\\u0000":1}}', "a.'b\\x00'"),
        (b'["x","\\u0000"]', "[1]"),
        (b'"\\u0000"', "body"),
    ],
)
def test_a_nul_is_named_where_it_is(body: bytes, location: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        check_json_body(body, 64)
    assert caught.value.location == location


def test_escaped_backslashes_and_invalid_json_pass_through() -> None:
    check_json_body(b'{"a":"\\\\u0000"}', 64)  # a backslash, then the text u0000
    check_json_body(b'{"a":"\\u0000', 64)  # not JSON: its parser answers
    refuse_nul("no nul here", "x")
    with pytest.raises(InvalidInput):
        refuse_nul("a\x00", "x")
