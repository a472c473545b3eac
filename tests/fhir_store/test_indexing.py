"""Pure index extraction and date-range logic (no database), with property tests."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from fhir_store.instants import parse_fhir_instant_range, to_us
from fhir_store.search_params import extract_index_rows, normalize_text


def test_normalize_text_handles_vietnamese() -> None:
    assert normalize_text("Nguyễn Văn Đức") == "nguyen van duc"
    assert normalize_text("  ĐỖ  ") == "do"


def test_extracts_tokens_strings_dates_references() -> None:
    rows = extract_index_rows(
        {
            "resourceType": "Encounter",
            "identifier": [{"system": "s", "value": "V1"}],
            "status": "finished",
            "class": {"system": "c", "code": "AMB"},
            "subject": {"reference": "Patient/p1"},
            "period": {"start": "2026-11-20T08:30:00+07:00", "end": "2026-11-20T10:15:00+07:00"},
        },
        lambda value: f"blind({value})",
    )
    # identifiers go through the blinding function, other codes do not
    assert ("identifier", "s", "blind(V1)") in rows.tokens and ("class", "c", "AMB") in rows.tokens
    assert ("patient", "Patient", "p1") in rows.references
    low, high = rows.dates[0][1:]
    assert low == to_us(datetime(2026, 11, 20, 1, 30, tzinfo=UTC))
    assert high == to_us(datetime(2026, 11, 20, 3, 15, 1, tzinfo=UTC)) - 1


@given(st.dates(min_value=datetime(1900, 1, 1).date(), max_value=datetime(2100, 12, 31).date()))
def test_a_day_contains_its_instants_and_nests_in_its_month(day: object) -> None:
    text = str(day)
    low, high = parse_fhir_instant_range(text)
    m_low, m_high = parse_fhir_instant_range(text[:7])
    y_low, y_high = parse_fhir_instant_range(text[:4])
    assert y_low <= m_low <= low < high <= m_high <= y_high
    assert high - low == 86_400_000_000 - 1
    noon_low, _ = parse_fhir_instant_range(f"{text}T12:00:00Z")
    assert low < noon_low < high


def _normalize_reference(value: str) -> str:
    """The definition normalize_text must keep: NFD, combining marks dropped, Đ/đ folded."""
    import unicodedata

    decomposed = unicodedata.normalize("NFD", value.replace("Đ", "D").replace("đ", "d"))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).lower().strip()


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=40))
def test_normalize_text_matches_its_definition(value: str) -> None:
    assert normalize_text(value) == _normalize_reference(value)


@given(st.text(alphabet="aăâbcdđeêghiklmnoôơpqrstuưvxyAĂÂĐÊÔƠƯ àáảãạằắẳẵặầấẩẫậ-'", max_size=30))
def test_normalize_text_on_vietnamese_letters(value: str) -> None:
    assert normalize_text(value) == _normalize_reference(value)


def test_accent_table_remembers_only_the_basic_plane() -> None:
    from fhir_store.search_params import _STRIP_MARKS

    assert normalize_text("\U0001d165x\U0001f600") == "x\U0001f600"  # a musical combining mark is dropped
    assert 0x1D165 not in _STRIP_MARKS and 0x1F600 not in _STRIP_MARKS
    assert _STRIP_MARKS[ord("ễ")] == ord("ễ") and normalize_text("ễ") == "e"
