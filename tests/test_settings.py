"""The settings tree (common/settings.py): names, types, one place that reads the environment."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

from common.settings import ENV_PREFIX, Settings, env_names

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("gateway", "fhir_store", "mappers", "consent", "audit", "crm_bridge", "common")
#: A name in the docs that is not a setting: an experiment described in the benchmark history.
NOT_SETTINGS = {"CAREBRIDGE_HL7_INGEST_PROCESSES"}
#: Settings restricted to a few values: a valid value other than the default, for each.
CONSTRAINED = {
    "hl7_control_id_reuse": ("refuse", "refuse"),
    "hl7_sender_control_id_reuse": ("HIS_VN^BVDK_HN=refuse", "HIS_VN^BVDK_HN=refuse"),
    "hl7_sender_ignore": ("HIS_VN^BVDK_HN=ADT^A60|ORU", "HIS_VN^BVDK_HN=ADT^A60|ORU"),
    "env": ("production", "production"),
    "http_trusted_proxies": ("10.0.0.0/8", "10.0.0.0/8"),
    "crm_webhook_allowed_networks": ("10.20.0.0/16", "10.20.0.0/16"),
}


def _leaves(settings: Settings) -> dict[str, Any]:
    """Every value of the tree by its flat name (``hl7_strict``), secrets opened."""
    out: dict[str, Any] = {}
    for name, value in settings:
        if isinstance(value, BaseModel):
            for sub, inner in value:
                out[f"{name}_{sub}"] = inner
        else:
            out[name] = value
    return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in out.items()}


def _other_value(default: Any) -> tuple[str, Any]:
    """A variable value that differs from ``default``, and what it must parse to."""
    if isinstance(default, bool):
        return ("no", False) if default else ("yes", True)
    if isinstance(default, int):
        return str(default + 1), default + 1
    if isinstance(default, float):
        return str(default + 0.25), default + 0.25
    return "x-" + str(default), "x-" + str(default)


def test_every_variable_sets_exactly_its_own_setting() -> None:
    defaults = _leaves(Settings())
    names = list(env_names())
    assert len(names) == len(set(names)) == len(defaults)
    for name in names:
        flat = name.removeprefix(ENV_PREFIX).lower()
        raw, parsed = CONSTRAINED.get(flat) or _other_value(defaults[flat])
        changed = _leaves(Settings.from_env({name: raw}))
        assert {k for k in defaults if changed[k] != defaults[k]} == {flat}, name
        assert changed[flat] == parsed and type(changed[flat]) is type(parsed), name


def test_names_and_types_of_the_contract() -> None:
    """The names operators already use (README, DESIGN.md §2, compose files) land where the code reads them."""
    settings = Settings.from_env(
        {
            "CAREBRIDGE_DATABASE_URL": "postgresql://u@db/carebridge",
            "CAREBRIDGE_HL7_STRICT": "true",
            "CAREBRIDGE_HL7_INGEST_LANES": "4",
            "CAREBRIDGE_AUDIT_ASYNC_READS": "false",
            "CAREBRIDGE_STORE_KEYS": '{"content": {}}',
            "CAREBRIDGE_CRM_KEYS": '{"field": {}}',
            "CAREBRIDGE_MLLP_PORT": "2576",
            "CAREBRIDGE_HTTP_WORKERS": "3",
            "CAREBRIDGE_DB_POOL_SIZE": "5",
            "CAREBRIDGE_MLLP_IDLE_TIMEOUT_S": "1.5",
            "CAREBRIDGE_CRM_HIS_MLLP": "his.local:2575",
            "CAREBRIDGE_PRIVACY_TOMBSTONE_FILE": "/srv/tombstones.jsonl",
        }
    )
    assert settings.database_url == "postgresql://u@db/carebridge"
    assert settings.hl7.strict is True and settings.hl7.ingest_lanes == 4
    assert settings.audit.async_reads is False
    assert settings.store.key_source.inline == '{"content": {}}'
    assert settings.store.key_source.name == "CAREBRIDGE_STORE_KEYS"
    assert settings.crm.key_source.inline == '{"field": {}}'
    assert settings.crm.key_source.name == "CAREBRIDGE_CRM_KEYS"
    assert settings.mllp.port == 2576 and settings.http.workers == 3 and settings.db_pool_size == 5
    assert settings.mllp.idle_timeout_s == 1.5
    assert settings.crm.his_endpoint() == ("his.local", 2575)
    assert settings.privacy.tombstone_path == Path("/srv/tombstones.jsonl")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1", True),
        ("true", True),
        ("YES", True),
        (" on ", True),
        ("0", False),
        ("no", False),
        ("maybe", False),
        ("", False),
    ],
)
def test_booleans_keep_the_documented_meaning(raw: str, expected: bool) -> None:
    """README: ``1``, ``true``, ``yes``, ``on`` are true, anything else is false."""
    assert Settings.from_env({"CAREBRIDGE_HL7_VALIDATE_RESOURCES": raw}).hl7.validate_resources is expected


def test_a_malformed_number_is_refused() -> None:
    with pytest.raises(ValidationError, match="ingest_lanes"):
        Settings.from_env({"CAREBRIDGE_HL7_INGEST_LANES": "two"})


def test_unknown_variables_are_ignored_unknown_python_names_refused() -> None:
    """A later version's setting in a shared env file must not stop this one; a typo in code must."""
    # (CAREBRIDGE_CRM_ALLOW_HTTP_WEBHOOKS was this test's future setting until issue #16 made it real)
    env = {"CAREBRIDGE_CRM_LATER_VERSION_SETTING": "true", "CAREBRIDGE_NOPE": "1", "OTHER_HL7_STRICT": "1"}
    assert Settings.from_env(env) == Settings()
    with pytest.raises(ValidationError):
        Settings.from_env({}, hl7_strikt=True)
    with pytest.raises(ValidationError):
        Settings.from_env({}, nonsense=1)


def test_overrides_win_over_the_environment_and_none_means_unset() -> None:
    env = {"CAREBRIDGE_HTTP_PORT": "9000", "CAREBRIDGE_MLLP_PORT": "2600", "CAREBRIDGE_HL7_GROUP_MAX": "8"}
    settings = Settings.from_env(env, http_port=0, mllp_port=None, hl7_strict=True, database_url=None)
    assert (settings.http.port, settings.mllp.port) == (0, 2600)
    assert settings.hl7.group_max == 8 and settings.hl7.strict is True  # the rest of the group kept
    assert settings.database_url == Settings().database_url


def test_only_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAREBRIDGE_HL7_STRICT", "1")
    assert Settings().hl7.strict is False
    assert Settings.from_env().hl7.strict is True


def test_the_tree_is_immutable_and_keeps_secrets_out_of_its_repr() -> None:
    settings = Settings.from_env(
        {"CAREBRIDGE_STORE_KEYS": "secret-json", "CAREBRIDGE_CRM_KEYS": "other-json"}
    )
    assert "secret-json" not in repr(settings) and "other-json" not in str(settings)
    with pytest.raises(ValidationError):
        settings.hl7.strict = True
    with pytest.raises(ValidationError):
        settings.database_url = "x"


def test_key_constants_name_the_settings() -> None:
    from consent.keys import ENV_KEYS as CRM_KEYS
    from fhir_store.content_cipher import ENV_KEYS as STORE_KEYS

    names = set(env_names())
    assert {CRM_KEYS, STORE_KEYS} <= names
    assert Settings().store.key_source.name == STORE_KEYS and Settings().crm.key_source.name == CRM_KEYS


def test_every_documented_variable_is_a_setting() -> None:
    """Names in the README, docs, deploy files, demo, bench and tests are all settings of the tree."""
    names = set(env_names())
    files = [ROOT / "README.md", ROOT / "docker-compose.yml", ROOT / "Makefile"]
    for folder in ("docs", "deploy", "demo", "bench", "tests", "config", *PACKAGES):
        files += [
            p
            for p in (ROOT / folder).rglob("*")
            if p.is_file() and p.suffix in {".md", ".py", ".example", ".yml", ".yaml"}
        ]
    found = {
        match
        for file in files
        if file != Path(__file__)  # this file names unknown variables on purpose
        for match in re.findall(r"CAREBRIDGE_[A-Z0-9_]+", file.read_text(encoding="utf-8"))
        if not match.endswith("_")  # a prefix (``CAREBRIDGE_MLLP_TLS_*``), not a name
    }
    assert sorted(found - names - NOT_SETTINGS) == []


def test_no_environment_reads_outside_the_settings_module() -> None:
    """ISO/IEC 27001:2022 A.8.9: every knob is in one place (``grep os.environ`` finds only it)."""
    pattern = re.compile(r"\bos\.(environ|getenv)\b|\bgetenv\(|from os import .*\b(environ|getenv)\b")
    readers = sorted(
        str(path.relative_to(ROOT))
        for package in PACKAGES
        for path in (ROOT / package).rglob("*.py")
        if pattern.search(path.read_text(encoding="utf-8"))
    )
    assert readers == ["common/settings.py"]
