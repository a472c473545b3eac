"""Production mode (issue #16 item 7): each rule of ``gateway.production`` by itself, then the entry points.

The baseline is a configuration that passes; every test changes one thing and
expects exactly its own line, so a rule that stops firing, or fires for the
wrong reason, fails here.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from common import Settings, child_environment
from gateway.cli import main
from gateway.http.app import create_app
from gateway.production import (
    ProductionRefused,
    check,
    is_loopback,
    metrics_allowed,
    production_problems,
    weak_key_reason,
)
from gateway.runtime import Runtime

TOKEN = secrets.token_urlsafe(32)


def ring(prefix: str, *keys: bytes) -> dict[str, Any]:
    ids = {f"{prefix}{n}": base64.b64encode(key).decode() for n, key in enumerate(keys, 1)}
    return {"current": f"{prefix}1", "keys": ids}


def random_documents() -> dict[str, dict[str, Any]]:
    return {
        "store": {"content": ring("c", secrets.token_bytes(32)), "blind": ring("b", secrets.token_bytes(32))},
        "crm": {
            "field": ring("f", secrets.token_bytes(32)),
            "pseudonym": {"crm-1": ring("p", secrets.token_bytes(32))},
        },
    }


def good(**changes: Any) -> Settings:
    """A production configuration on all interfaces that passes every rule; ``changes`` are flat names."""
    values: dict[str, Any] = {
        "env": "production",
        "host": "0.0.0.0",
        "base_url": "https://carebridge.hospital.example/fhir",
        "http_tls_proxy": True,
        "mllp_tls_client_ca": "/app/var/tls/his-ca.pem",
        "mllp_allowed_senders": "his.hospital.example=HIS_VN^BVDK_HN",
    }
    return Settings.from_env({}, **{**values, **changes})


def problems_of(settings: Settings, documents: dict[str, dict[str, Any]] | None = None) -> list[str]:
    return production_problems(settings, random_documents() if documents is None else documents)


def test_the_baseline_passes() -> None:
    assert problems_of(good()) == []
    assert problems_of(good(metrics_token=TOKEN, http_trusted_proxies="10.20.0.5,10.30.0.0/16")) == []


def test_missing_base_url() -> None:
    (line,) = problems_of(good(base_url=""))
    assert line.startswith("CAREBRIDGE_BASE_URL is empty")


def test_plain_http_base_url() -> None:
    (line,) = problems_of(good(base_url="http://carebridge.hospital.example/fhir"))
    assert line.startswith("CAREBRIDGE_BASE_URL 'http://carebridge.hospital.example/fhir' is not https://")


def test_http_beyond_loopback_without_a_tls_proxy() -> None:
    (line,) = problems_of(good(http_tls_proxy=False))
    assert line.startswith("HTTP listens on 0.0.0.0 beyond loopback without a TLS proxy")
    assert "CAREBRIDGE_HTTP_TLS_PROXY=true" in line
    (line,) = problems_of(good(http_tls_proxy=False, host="10.1.2.3"))
    assert "10.1.2.3" in line


def test_loopback_needs_no_proxy_nor_sender_control() -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.0.0.2"):
        settings = good(host=host, http_tls_proxy=False, mllp_tls_client_ca="", mllp_allowed_senders="")
        assert problems_of(settings) == [], host
    assert problems_of(good(host="127.0.0.1", mllp_open=True)) == []  # a local trial


def test_open_mllp_beyond_loopback() -> None:
    (line,) = problems_of(good(mllp_open=True, mllp_port=2576))
    assert line.startswith("CAREBRIDGE_MLLP_OPEN=true with MLLP on 0.0.0.0")
    assert "port 2576" in line


@pytest.mark.parametrize(
    "changes",
    [
        {"mllp_tls_client_ca": ""},
        {"mllp_allowed_senders": ""},
        {"mllp_tls_client_ca": "", "mllp_allowed_senders": ""},
    ],
)
def test_registered_senders_are_the_sender_control_beyond_loopback(changes: dict[str, str]) -> None:
    """Closed MLLP checks every message against `carebridge senders` (network or certificate name)."""
    assert problems_of(good(**changes)) == []


def test_everyone_as_trusted_proxy() -> None:
    for value in ("0.0.0.0/0", "10.0.0.1,::/0"):
        (line,) = problems_of(good(http_trusted_proxies=value))
        assert line.startswith("CAREBRIDGE_HTTP_TRUSTED_PROXIES trusts every address")


def test_short_metrics_token() -> None:
    (line,) = problems_of(good(metrics_token="s3cret"))
    assert line.startswith("CAREBRIDGE_METRICS_TOKEN is shorter than 32 characters")
    assert "s3cret" not in line


def test_template_placeholders_are_named_never_printed() -> None:
    settings = good(
        database_url="postgresql://carebridge:CHANGE_ME@postgres:5432/carebridge", metrics_token="CHANGE_ME"
    )
    assert problems_of(settings) == [
        "CAREBRIDGE_DATABASE_URL still holds the template placeholder CHANGE_ME: set the real value",
        "CAREBRIDGE_METRICS_TOKEN still holds the template placeholder CHANGE_ME: set the real value",
    ]
    (line,) = problems_of(good(base_url="https://carebridge.CHANGE_ME.example/fhir"))
    assert line.startswith("CAREBRIDGE_BASE_URL still holds")


def test_all_zero_store_key() -> None:
    documents = random_documents()
    documents["store"]["content"] = ring("c", bytes(32))
    (line,) = problems_of(good(), documents)
    assert line.startswith("store: key content/c1 is all zeros")


def test_weak_crm_pseudonym_key() -> None:
    documents = random_documents()
    documents["crm"]["pseudonym"]["crm-2"] = ring("p", secrets.token_bytes(32), b"\x07" * 32)
    (line,) = problems_of(good(), documents)
    assert line.startswith("crm: key pseudonym.crm-2/p2 has too few distinct bytes to be random")


def test_key_reused_across_documents() -> None:
    documents = random_documents()
    documents["crm"]["field"] = documents["store"]["blind"]
    (line,) = problems_of(good(), documents)
    assert line == "crm: key field/b1 is the same key as store blind/b1: every key must be its own"


def test_key_that_is_not_base64() -> None:
    documents = random_documents()
    documents["store"]["blind"]["keys"]["b1"] = "not base64!"
    (line,) = problems_of(good(), documents)
    assert line == "store: key blind/b1 is not base64"


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        (bytes(32), "is all zeros"),
        (b"\xff" * 32, "has too few distinct bytes to be random"),
        (b"0123456789abcdef" * 2, "repeats a short pattern"),
        (bytes(range(32)), "is a counting sequence"),
        (bytes(range(100, 68, -1)), "is a counting sequence"),
        (bytes(16), "is all zeros"),
        (bytes.fromhex("9f3c5a0e7b21d4c8e61f0a93b7d25c4e"), "is 16 bytes, not 32"),
    ],
    ids=["zeros", "one-byte", "period-16", "counting-up", "counting-down", "short-zeros", "short"],
)
def test_weak_key_reasons(key: bytes, reason: str) -> None:
    assert weak_key_reason(key) == reason


def test_random_keys_are_not_weak() -> None:
    assert all(weak_key_reason(secrets.token_bytes(32)) is None for _ in range(2000))


def test_several_problems_give_one_line_each() -> None:
    documents = random_documents()
    documents["store"]["content"] = ring("c", bytes(32))
    settings = good(base_url="", http_tls_proxy=False, mllp_open=True)
    assert len(problems_of(settings, documents)) == 4


def test_is_loopback() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "::1", "[::1]", "localhost", "LOCALHOST", "127.8.9.1"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.1", "carebridge.example", ""))


def test_metrics_rule() -> None:
    dev, prod = Settings(), good(metrics_token=TOKEN)
    bearer = {b"authorization": f"Bearer {TOKEN}".encode()}
    forwarded = {b"x-forwarded-for": b"203.0.113.7"}
    assert metrics_allowed(dev, "203.0.113.7", {})  # development keeps today's open /metrics
    assert metrics_allowed(prod, "127.0.0.1", {}) and metrics_allowed(prod, "::1", {})
    assert not metrics_allowed(prod, "10.0.0.9", {})
    assert not metrics_allowed(prod, None, {})
    assert not metrics_allowed(prod, "127.0.0.1", forwarded)  # a local proxy relaying an outsider
    assert not metrics_allowed(prod, "127.0.0.1", {b"forwarded": b"for=203.0.113.7"})
    assert metrics_allowed(prod, "10.0.0.9", bearer) and metrics_allowed(
        prod, "127.0.0.1", {**forwarded, **bearer}
    )
    assert not metrics_allowed(prod, "10.0.0.9", {b"authorization": b"Bearer wrong"})
    assert not metrics_allowed(prod, "10.0.0.9", {b"authorization": f"Basic {TOKEN}".encode()})
    assert not metrics_allowed(good(), "10.0.0.9", {b"authorization": b"Bearer "})  # no token configured


# --- the key files as check() reads them -------------------------------------------------------------


def write_keys(path: Path, document: dict[str, Any]) -> str:
    path.write_text(json.dumps(document))
    return str(path)


def test_check_reads_the_key_files(tmp_path: Path) -> None:
    store = write_keys(
        tmp_path / "store.json", {"content": ring("c", bytes(32)), "blind": ring("b", bytes(32))}
    )
    crm = write_keys(tmp_path / "crm.json", random_documents()["crm"])
    assert check(good(store_key_file=store, crm_key_file=crm)) == [
        f"CAREBRIDGE_STORE_KEY_FILE ({store}): key content/c1 is all zeros: generate a random one (docs/operations.md, keys)",
        f"CAREBRIDGE_STORE_KEY_FILE ({store}): key blind/b1 is all zeros: generate a random one (docs/operations.md, keys)",
    ]


def test_check_reads_inline_keys_and_names_the_variable(tmp_path: Path) -> None:
    inline = json.dumps({"field": ring("f", bytes(32)), "pseudonym": {}})
    (line,) = check(good(store_key_file=str(tmp_path / "absent.json"), crm_keys=inline))
    assert line.startswith("CAREBRIDGE_CRM_KEYS: key field/f1 is all zeros")


def test_check_names_an_unreadable_key_file(tmp_path: Path) -> None:
    (tmp_path / "store.json").write_text("{not json")
    (line,) = check(
        good(store_key_file=str(tmp_path / "store.json"), crm_key_file=str(tmp_path / "none.json"))
    )
    assert line.startswith(f"CAREBRIDGE_STORE_KEY_FILE ({tmp_path / 'store.json'}) cannot be read")


def test_check_passes_before_the_first_start(tmp_path: Path) -> None:
    """No key file yet: the first start creates random ones."""
    assert check(good(store_key_file=str(tmp_path / "s.json"), crm_key_file=str(tmp_path / "c.json"))) == []


def test_development_mode_checks_nothing(tmp_path: Path) -> None:
    store = write_keys(
        tmp_path / "store.json", {"content": ring("c", bytes(32)), "blind": ring("b", bytes(32))}
    )
    assert check(good(env="development", base_url="", mllp_open=True, store_key_file=store)) == []
    assert Settings().env == "development"


# --- the entry points ------------------------------------------------------------------------------------

WEAK_ENV = {
    "CAREBRIDGE_ENV": "production",
    "CAREBRIDGE_HOST": "0.0.0.0",
    "CAREBRIDGE_MLLP_OPEN": "true",
}


def weak_environment(tmp_path: Path) -> dict[str, str]:
    store = write_keys(
        tmp_path / "store.json",
        {"content": ring("c", bytes(32)), "blind": ring("b", secrets.token_bytes(32))},
    )
    return {
        **WEAK_ENV,
        "CAREBRIDGE_STORE_KEY_FILE": store,
        "CAREBRIDGE_CRM_KEY_FILE": str(tmp_path / "crm.json"),
        "CAREBRIDGE_DATABASE_URL": f"sqlite:///{tmp_path / 'never.db'}",
    }


EXPECTED_LINES = [
    "CAREBRIDGE_BASE_URL is empty",
    "HTTP listens on 0.0.0.0 beyond loopback without a TLS proxy",
    "CAREBRIDGE_MLLP_OPEN=true with MLLP on 0.0.0.0",
    "CAREBRIDGE_STORE_KEY_FILE",
]


def test_serve_refuses_with_one_line_per_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in weak_environment(tmp_path).items():
        monkeypatch.setenv(name, value)
    assert main(["serve", "--http-port", "0", "--mllp-port", "0"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == len(EXPECTED_LINES)
    for line, start in zip(lines, EXPECTED_LINES, strict=True):
        assert line.startswith(f"carebridge serve: production mode refuses: {start}"), line
    assert not (tmp_path / "never.db").exists()  # refused before migrations, keys or sockets
    assert not (tmp_path / "crm.json").exists()


def test_serve_command_exits_non_zero(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "serve", "--http-port", "0", "--mllp-port", "0"],
        env=child_environment(**weak_environment(tmp_path)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == len(EXPECTED_LINES), result.stderr


def test_app_factory_refuses(database_url: str, tmp_path: Path) -> None:
    settings = good(
        database_url=database_url,
        base_url="",
        store_key_file=str(tmp_path / "store.json"),
        crm_key_file=str(tmp_path / "crm.json"),
    )
    runtime = Runtime.create(settings, migrate=False)
    try:
        with pytest.raises(ProductionRefused) as refused:
            create_app(runtime)
        (line,) = refused.value.problems
        assert line.startswith("CAREBRIDGE_BASE_URL is empty")
        assert str(refused.value) == line
        # the same runtime with a base URL builds: keys created at start are random
        runtime.settings = settings.model_copy(
            update={"base_url": "https://carebridge.hospital.example/fhir"}
        )
        assert create_app(runtime).title == "carebridge"
    finally:
        runtime.close()
