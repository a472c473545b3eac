"""Vietnamese first: every string the console templates show has a Vietnamese translation (issue #19)."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.auth.users import PEOPLE_ROLES
from gateway.console.i18n import load_catalog, local_time

TEMPLATES = Path(__file__).resolve().parents[2] / "gateway" / "console" / "templates"


def template_strings() -> set[str]:
    found: set[str] = set()
    for template in TEMPLATES.glob("*.html"):
        found |= set(re.findall(r'_\("((?:[^"\\]|\\.)*)"', template.read_text(encoding="utf-8")))
    return found


def test_every_template_string_and_role_is_translated_to_vietnamese() -> None:
    catalog = load_catalog("vi")
    strings = template_strings()
    assert len(strings) > 30  # the extraction found the templates' strings
    missing = sorted((strings | set(PEOPLE_ROLES)) - set(catalog))
    assert missing == []
    untranslated = sorted(k for k in strings if catalog[k] == k and k not in ("CRM",))
    assert untranslated == []
    assert load_catalog("en") == {}  # the ids are the English


def test_local_time_is_vietnam_time() -> None:
    assert local_time(0) == ""
    assert local_time(1_764_547_200_000_000) == "01/12/2025 07:00"  # 2025-12-01T00:00Z


def test_role_table_denies_by_default() -> None:
    from gateway.console.roles import ACTIONS, may, roles_for

    assert roles_for("no-such-action") == ()
    assert not may("admin", "raw-hl7") and not may("admin", "patients")  # an admin sees no patient data
    assert not may("clinician", "reprocess") and may("operator", "reprocess")
    assert all(roles <= set(PEOPLE_ROLES) for roles in ACTIONS.values())


def test_console_and_letter_name_each_purpose_alike() -> None:
    """The compliance officer's page and the patient's letter read one table (consent.PURPOSE_LABELS)."""
    from consent import PURPOSE_LABELS
    from gateway.console.labels import CONSENT_PURPOSES, PURPOSE_OF_USE, label

    vietnamese = load_catalog("vi")
    for table in (PURPOSE_OF_USE, CONSENT_PURPOSES):
        for code in table:
            shown = label(table, code, lambda m: vietnamese.get(m, m))
            assert f"{shown} / {label(table, code, str)}" == PURPOSE_LABELS[code], code
