"""The one ACK-mode decision (mappers.ack): original vs enhanced mode, strict vs lenient, commit codes."""

from __future__ import annotations

import pytest

from mappers.ack import acks_to_send, commit_ack_code
from mappers.hl7_message import Header, parse_message


def _header(accept: str, application: str) -> Header:
    raw = f"MSH|^~\\&|A|B|C|D|20260101||ADT^A04|1|P|2.5|||{accept}|{application}".encode()
    return parse_message(raw).header


@pytest.mark.parametrize("strict", [True, False])
@pytest.mark.parametrize("success", [True, False])
def test_original_mode_and_unreadable_header_get_one_application_ack(strict: bool, success: bool) -> None:
    assert acks_to_send(_header("", ""), success=success, strict=strict) == (False, True)
    assert acks_to_send(None, success=success, strict=strict) == (False, True)


@pytest.mark.parametrize(
    ("accept", "application", "success", "strict_answer", "lenient_answer"),
    [
        ("AL", "NE", True, (True, False), (False, True)),  # a template MSH-15/16: lenient still answers AA
        ("AL", "AL", True, (True, True), (True, True)),
        ("NE", "AL", True, (False, True), (False, True)),
        ("ER", "ER", True, (False, False), (False, True)),
        ("ER", "ER", False, (True, True), (True, True)),
        ("SU", "SU", False, (False, False), (False, True)),
        ("AL", "", True, (True, True), (True, True)),  # an empty condition means AL
    ],
)
def test_enhanced_mode(
    accept: str,
    application: str,
    success: bool,
    strict_answer: tuple[bool, bool],
    lenient_answer: tuple[bool, bool],
) -> None:
    header = _header(accept, application)
    assert acks_to_send(header, success=success, strict=True) == strict_answer
    assert acks_to_send(header, success=success) == strict_answer  # the standard's reading by default
    assert acks_to_send(header, success=success, strict=False) == lenient_answer


def test_commit_ack_code() -> None:
    assert commit_ack_code("AA") == "CA"
    assert commit_ack_code("AE") == "CA"
    assert commit_ack_code("AR") == "CR"
