"""The one phone rule (common.phones): examples, the fast path proved equal to libphonenumber, properties."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from common.phones import (
    ORIGINAL_TEXT_URL,
    normalize_contact_point,
    normalize_phone,
    normalize_phone_slow,
    normalize_telecoms,
    phone_variants,
)


@pytest.mark.parametrize(
    ("raw", "e164"),
    [
        ("0912345678", "+84912345678"),
        ("+84 912 345 678", "+84912345678"),
        ("0084912345678", "+84912345678"),  # international prefix, not "+84084…"
        ("84912345678", "+84912345678"),
        ("+84 (0) 912 345 678", "+84912345678"),
        ("0912 000 111", "+84912000111"),
        (" 84912000111", "+84912000111"),  # "+84…" in a query string arrives with a space
        ("024 3826 4567", "+842438264567"),
        ("0123456789", "+84123456789"),  # an old 11-digit-era mobile: possible, kept readable
        ("+1 650 253 0000", "+16502530000"),
        ("12345", None),
        ("ext 12", None),
        ("0912345678 ext 12", None),
        ("1-800-FLOWERS", None),
        ("", None),
    ],
)
def test_examples(raw: str, e164: str | None) -> None:
    assert normalize_phone(raw) == e164
    assert normalize_phone_slow(raw) == e164


def test_phone_variants() -> None:
    assert phone_variants("84912345678") == ["84912345678", "+84912345678"]
    assert phone_variants("+84912345678") == ["+84912345678"]
    assert phone_variants("ext 12") == ["ext 12"]


def test_contact_point_keeps_the_original_once() -> None:
    point: dict[str, Any] = {"system": "phone", "value": "0912 000 111", "use": "mobile"}
    normalize_contact_point(point)
    expected = {
        "system": "phone",
        "value": "+84912000111",
        "use": "mobile",
        "extension": [{"url": ORIGINAL_TEXT_URL, "valueString": "0912 000 111"}],
    }
    assert point == expected
    normalize_contact_point(point)
    assert point == expected
    # a client that already kept its own original text keeps it, and other extensions stay
    other = {"url": "https://example.org/x", "valueString": "y"}
    own = {"system": "sms", "value": "0912000111", "extension": [other]}
    normalize_contact_point(own)
    assert own["extension"] == [other, {"url": ORIGINAL_TEXT_URL, "valueString": "0912000111"}]


@pytest.mark.parametrize(
    "point",
    [
        {"system": "email", "value": "0912000111"},
        {"value": "0912000111"},
        {"system": "phone", "value": "call me"},
        {"system": "phone", "value": 912000111},
        {"system": "phone", "value": "0912000111", "extension": "broken"},
    ],
)
def test_contact_points_left_alone(point: dict[str, Any]) -> None:
    before = copy.deepcopy(point)
    normalize_contact_point(point)
    assert point == before


def test_telecoms_at_any_depth() -> None:
    patient: dict[str, Any] = {
        "resourceType": "Patient",
        "telecom": [{"system": "phone", "value": "0912000111"}, {"system": "email", "value": "a@b.vn"}],
        "contact": [{"telecom": [{"system": "fax", "value": "024 3826 4567"}]}],
    }
    normalize_telecoms(patient)
    assert patient["telecom"][0]["value"] == "+84912000111"
    assert patient["telecom"][1] == {"system": "email", "value": "a@b.vn"}
    assert patient["contact"][0]["telecom"][0]["value"] == "+842438264567"


# --------------------------------------------------------------------------- properties

# A Vietnamese mobile's national significant number: 3/5/7/8/9 then eight digits.
VN_MOBILE = st.from_regex(r"[35789][0-9]{8}", fullmatch=True)
SEPARATOR = st.sampled_from(["", " ", ".", "-"])
PHONE_TEXT = st.text(alphabet="0123456789+ ().-/", max_size=20)


def _grouped(nsn: str, sep: str) -> str:
    return sep.join((nsn[:2], nsn[2:5], nsn[5:]))


@given(nsn=VN_MOBILE, sep=SEPARATOR)
def test_every_spelling_of_a_vn_mobile_normalises_equal(nsn: str, sep: str) -> None:
    spellings = [
        "0" + nsn,
        "+84" + nsn,
        "84" + nsn,
        "0084" + nsn,
        "0" + _grouped(nsn, sep),
        "+84 " + _grouped(nsn, sep),
        "+84 (0) " + _grouped(nsn, sep),
        "0084 " + _grouped(nsn, sep),
        " 84" + nsn,
    ]
    assert {normalize_phone(s) for s in spellings} == {"+84" + nsn}


@given(raw=st.one_of(PHONE_TEXT, st.text(max_size=20)))
def test_normalisation_is_idempotent(raw: str) -> None:
    e164 = normalize_phone(raw)
    if e164 is not None:
        assert normalize_phone(e164) == e164
        assert phone_variants(e164) == [e164]


@given(raw=st.from_regex(r"(\+84|0)[0-9]{8,11}", fullmatch=True))
def test_fast_path_equals_libphonenumber_on_its_shapes(raw: str) -> None:
    assert normalize_phone(raw) == normalize_phone_slow(raw)


@given(raw=st.one_of(PHONE_TEXT, st.text(max_size=20)))
def test_normalise_phone_is_the_libphonenumber_rule(raw: str) -> None:
    assert normalize_phone(raw) == normalize_phone_slow(raw)


@given(value=st.one_of(PHONE_TEXT, st.text(max_size=20)), system=st.sampled_from(["phone", "sms", "email"]))
def test_contact_point_normalisation_is_idempotent(value: str, system: str) -> None:
    point: dict[str, Any] = {"system": system, "value": value}
    normalize_contact_point(point)
    once = copy.deepcopy(point)
    normalize_contact_point(point)
    assert point == once


@pytest.mark.parametrize("prefix", ["0", "+84"])
def test_fast_path_equals_libphonenumber_for_every_leading_pair(prefix: str) -> None:
    """Every two leading digits of both lengths the fast path takes (deterministic, beside the property)."""
    for lead in range(100):
        for tail in ("1234567", "12345678"):
            raw = f"{prefix}{lead:02d}{tail}"
            assert normalize_phone(raw) == normalize_phone_slow(raw), raw
