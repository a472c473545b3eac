"""The one phone rule: Vietnamese numbers to E.164, the original kept beside.

Why one module: HL7 mapping (XTN), REST writes, the phone search and the CRM
projection must agree on what a number *is*, or a phone written by one path
is not found by another (DESIGN §3: ``0912345678`` and ``+84 912 345 678``
are both ``+84912345678``).  ``mappers`` and ``fhir_store`` both import
``common``, so the rule lives here once.

The rule is Google's libphonenumber (the ``phonenumbers`` package): parse with
Vietnam (``VN``) as the default region, so ``0912…`` (trunk prefix), ``84912…``,
``0084912…`` (international prefix) and ``+84 (0) 912…`` all read as the same
number; write E.164 (ITU-T E.164, as FHIR ContactPoint.value advises for
phones, https://hl7.org/fhir/R4/datatypes.html#ContactPoint).

A number is accepted when libphonenumber finds it *possible* (a length the
numbering plan allows), not *valid* (a range assigned today): validity
metadata changes with the plan (Vietnam moved 11-digit mobiles to 10 digits
in 2018) and old records still carry such numbers.  What cannot be read
safely (letters, an extension, an impossible length) is kept as sent:
:func:`normalize_phone` returns ``None`` and callers keep the original value.

:func:`normalize_phone` first tries a fast path for the two shapes an HL7
feed sends almost always (``0`` or ``+84`` followed by 9–10 digits, no
separators); ``tests/common/test_phones.py`` proves by property that it
returns exactly what libphonenumber returns for every such string, and
``bench/phone_normalise.py`` measures both (docs/benchmarks.md).
"""

from __future__ import annotations

import re
from typing import Any

import phonenumbers

#: Extension holding the text a ContactPoint's value was normalised from (docs/identifiers.md).
ORIGINAL_TEXT_URL = "https://fhir.carebridge.vn/StructureDefinition/original-text"

#: ContactPoint systems whose values are telephone numbers (FHIR R4 contact-point-system).
PHONE_SYSTEMS = frozenset({"phone", "sms", "fax", "pager"})

DEFAULT_REGION = "VN"

# Trunk "0" or "+84", then a national significant number of 9 or 10 digits not starting with 0.
# libphonenumber reads these as +84 and the national number (9 and 10 are possible lengths
# for VN), so the answer needs no parsing.
_FAST = re.compile(r"(?:\+84|0)([1-9]\d{8,9})")
# What a typed phone number may contain: digits, "+" and the usual separators.  Letters
# (vanity numbers, "ext", "call me") are not read: libphonenumber would convert or drop them.
_PHONE_CHARS = re.compile(r"[\d\s+().\-/]+")


def normalize_phone_slow(raw: str, region: str = DEFAULT_REGION) -> str | None:
    """The rule itself (libphonenumber): E.164, or None when the number cannot be read safely."""
    if not _PHONE_CHARS.fullmatch(raw):
        return None
    try:
        number = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if number.extension or not phonenumbers.is_possible_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_phone(raw: str) -> str | None:
    """E.164 form of a (Vietnamese by default) phone number; None when it cannot be read safely."""
    fast = _FAST.fullmatch(raw)
    if fast is not None:
        return "+84" + fast.group(1)
    return normalize_phone_slow(raw)


def phone_variants(value: str) -> list[str]:
    """What a phone search for ``value`` must look up: the text as sent, then its E.164 form.

    Stored phones are E.164 (normalised on write); the text as sent still finds
    a number that could not be normalised, and values written before the rule.
    """
    e164 = normalize_phone(value)
    return [value] if e164 is None or e164 == value else [value, e164]


def normalize_contact_point(point: dict[str, Any]) -> None:
    """Normalise a phone ContactPoint in place, keeping the original text in an extension.

    Only telephone systems are touched; an unreadable number stays as sent.  An
    original-text extension already present (a resource written before, or a
    client that kept its own) is left alone, so the function is idempotent.
    """
    value = point.get("value")
    if point.get("system") not in PHONE_SYSTEMS or not isinstance(value, str):
        return
    extensions = point.get("extension")
    if extensions is not None and not isinstance(extensions, list):
        return  # malformed: validation reports it
    e164 = normalize_phone(value.strip())
    if e164 is None or e164 == value:
        return
    point["value"] = e164
    kept = extensions or []
    if not any(isinstance(e, dict) and e.get("url") == ORIGINAL_TEXT_URL for e in kept):
        point["extension"] = [*kept, {"url": ORIGINAL_TEXT_URL, "valueString": value}]


def normalize_telecoms(node: Any) -> None:
    """Normalise every phone ContactPoint under ``node`` (any ``telecom`` list, at any depth)."""
    if isinstance(node, dict):
        for key, child in node.items():
            if key == "telecom" and isinstance(child, list):
                for point in child:
                    if isinstance(point, dict):
                        normalize_contact_point(point)
            elif isinstance(child, dict | list):
                normalize_telecoms(child)
    elif isinstance(node, list):
        for child in node:
            if isinstance(child, dict | list):
                normalize_telecoms(child)
