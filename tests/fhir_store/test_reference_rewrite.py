"""Reference rewriting of a transaction's resources, checked against the tree-walk definition."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from fhir_store.references import rewrite_references as _rewrite_references

URLS = ["urn:uuid:1", "urn:uuid:2", 'urn:uuid:"q"', "urn:uuid:\\b", "Patient/p1", "urn:uuid:ñ"]
URL_MAP = {"urn:uuid:1": "Patient/a", 'urn:uuid:"q"': 'Encounter/"e"', "Patient/p1": "Patient/p9"}


def _walk_definition(node: Any, url_map: dict[str, str], unresolved: list[str]) -> Any:
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                if value in url_map:
                    value = url_map[value]
                elif value.startswith("urn:uuid:"):
                    unresolved.append(value)
                out[key] = value
            else:
                out[key] = _walk_definition(value, url_map, unresolved)
        return out
    if isinstance(node, list):
        return [_walk_definition(item, url_map, unresolved) for item in node]
    return node


_KEYS = st.sampled_from(["reference", "display", "subject", 'a"reference', "reference\\", "x"])
_LEAVES = st.one_of(st.sampled_from(URLS), st.text(max_size=12), st.integers(-5, 5), st.booleans(), st.none())
_TREES = st.recursive(
    _LEAVES,
    lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(_KEYS, children, max_size=4)),
    max_leaves=25,
)


@given(st.dictionaries(_KEYS, _TREES, max_size=5))
def test_rewrite_matches_the_tree_walk(resource: dict[str, Any]) -> None:
    expected_unresolved: list[str] = []
    expected = _walk_definition(resource, URL_MAP, expected_unresolved)
    unresolved: list[str] = []
    assert _rewrite_references(resource, URL_MAP, unresolved) == expected
    assert unresolved == expected_unresolved


def test_rewrite_copies_and_leaves_the_input_alone() -> None:
    resource: dict[str, Any] = {
        "resourceType": "Encounter",
        "subject": {"reference": "urn:uuid:1"},
        "x": [{"y": 1}],
    }
    rewritten: Any = _rewrite_references(resource, URL_MAP)
    assert rewritten["subject"] == {"reference": "Patient/a"}
    assert resource["subject"] == {"reference": "urn:uuid:1"}
    rewritten["x"][0]["y"] = 2
    assert resource["x"][0]["y"] == 1


def test_a_string_that_only_looks_like_a_reference_is_not_touched() -> None:
    resource = {"note": '{"reference":"urn:uuid:1"}', "text": ',"reference":"urn:uuid:1"'}
    unresolved: list[str] = []
    assert _rewrite_references(resource, URL_MAP, unresolved) == resource
    assert unresolved == []
