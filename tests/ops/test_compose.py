"""The deployment files agree with each other and with the CLI contract (no Docker engine needed).

There is no Docker engine on our machines, so the compose file and the
Dockerfile are checked statically: the services, ports, health checks,
volumes and env files an operator relies on, that every env file has a
committed ``.example`` template holding only known settings, and that the
image starts exactly ``carebridge serve`` (DESIGN.md §2) on all interfaces.
"""

from __future__ import annotations

import json
import re
import secrets
from pathlib import Path
from typing import Any

import pytest
import yaml

from common import Settings, env_names
from gateway.cli import build_parser
from gateway.production import production_problems

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, rest = line.strip().partition(" ")
            out.append((instruction.upper(), rest.strip()))
    return out


def instruction(name: str) -> list[str]:
    return [rest for instr, rest in dockerfile_instructions() if instr == name]


def env_file_keys(path: Path) -> dict[str, str]:
    keys = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
            keys[key.strip()] = value.strip()
    return keys


def test_services_ports_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "migrate", "carebridge"}
    postgres, app, migrate = services["postgres"], services["carebridge"], services["migrate"]
    assert str(postgres["image"]).startswith("postgres:15")
    assert "ports" not in postgres  # the database is reachable only on the compose network
    assert app["build"] == "."
    assert app["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "migrate": {"condition": "service_completed_successfully"},
    }
    # issue #18: migrations run once as the owner (the postgres image's POSTGRES_USER), then exit
    assert migrate["image"] == app["image"] and migrate["restart"] == "no"
    assert migrate["env_file"] == ["deploy/postgres.env"] and "ports" not in migrate
    assert "gateway.migrations" in migrate["command"][-1] and "upgrade head" in migrate["command"][-1]
    assert "$${POSTGRES_USER}" in migrate["command"][-1] or "${POSTGRES_USER}" in migrate["command"][-1]
    published = {str(p).split(":")[-1].split("/")[0] for p in app["ports"]}
    assert published == {"8080", "2575"}
    assert {str(p).split(":")[0] for p in app["ports"]} == {"8080", "2575"}


def test_health_checks(compose: dict[str, Any]) -> None:
    pg_test = compose["services"]["postgres"]["healthcheck"]["test"]
    assert pg_test[0] == "CMD-SHELL" and "pg_isready" in pg_test[1]
    app_check = compose["services"]["carebridge"]["healthcheck"]
    assert app_check["test"][0] == "CMD" and "http://127.0.0.1:8080/readyz" in " ".join(app_check["test"])
    for check in (compose["services"]["postgres"]["healthcheck"], app_check):
        assert {"interval", "timeout", "retries"} <= set(check)
    (healthcheck,) = instruction("HEALTHCHECK")
    assert "http://127.0.0.1:8080/healthz" in healthcheck


def test_volumes_keep_database_and_keys(compose: dict[str, Any]) -> None:
    assert set(compose["volumes"]) == {"pgdata", "carebridge-var", "carebridge-anchors"}
    assert "pgdata:/var/lib/postgresql/data" in compose["services"]["postgres"]["volumes"]
    assert "carebridge-var:/app/var" in compose["services"]["carebridge"]["volumes"]
    # audit anchors live outside the database's volume (issue #18)
    assert "carebridge-anchors:/app/anchors" in compose["services"]["carebridge"]["volumes"]
    anchor = env_file_keys(ROOT / "deploy" / "carebridge.env.example")["CAREBRIDGE_AUDIT_ANCHOR_FILE"]
    assert anchor.startswith("/app/anchors/")
    # the key files the app is told to use live on that volume
    keys = env_file_keys(ROOT / "deploy" / "carebridge.env.example")
    for name in ("CAREBRIDGE_AUDIT_KEY_FILE", "CAREBRIDGE_BACKUP_KEY_FILE", "CAREBRIDGE_STORE_KEY_FILE"):
        assert keys[name].startswith("/app/var/")
    assert instruction("VOLUME") == ['["/app/var"]']


def test_env_files_have_committed_templates(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for env_file in service["env_file"]:
            real = ROOT / env_file
            assert real.parent == ROOT / "deploy" and real.suffix == ".env"
            assert (ROOT / (env_file + ".example")).is_file(), env_file
    # the real files hold secrets: ignored by git and kept out of the image
    assert "*.env" in (ROOT / "deploy" / ".gitignore").read_text().splitlines()
    assert "deploy/*.env" in (ROOT / ".dockerignore").read_text().splitlines()


def test_env_templates_use_known_settings_and_matching_credentials() -> None:
    app = env_file_keys(ROOT / "deploy" / "carebridge.env.example")
    known = set(env_names())
    assert set(app) <= known, set(app) - known
    pg = env_file_keys(ROOT / "deploy" / "postgres.env.example")
    assert {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB", "SERVICE_ROLE_PASSWORD"} <= set(pg)
    url = app["CAREBRIDGE_DATABASE_URL"]
    # the service is not the owner: it logs in as carebridge_svc (issue #18), created by the init script
    expected = f"postgresql://carebridge_svc:{pg['SERVICE_ROLE_PASSWORD']}@postgres:5432/{pg['POSTGRES_DB']}"
    assert url == expected
    assert pg["POSTGRES_USER"] != "carebridge_svc"
    assert "CAREBRIDGE_DATABASE_OWNER_URL" not in app  # the owner's password stays out of the service
    assert pg["POSTGRES_PASSWORD"] == "CHANGE_ME"  # templates never carry a real secret
    assert pg["SERVICE_ROLE_PASSWORD"] == "CHANGE_ME"
    init = (ROOT / "deploy" / "postgres-init" / "10-service-role.sh").read_text()
    assert "CREATE ROLE carebridge_svc LOGIN" in init and "IN ROLE carebridge_app" in init


def test_image_command_is_carebridge_serve(compose: dict[str, Any]) -> None:
    (cmd,) = instruction("CMD")
    argv = json.loads(cmd)  # exec form: signals reach carebridge directly (graceful stop)
    assert argv == ["carebridge", "serve", "--host", "0.0.0.0"]
    assert compose["services"]["carebridge"]["command"] == argv
    args = build_parser().parse_args(argv[1:])
    assert args.command == "serve" and args.host == "0.0.0.0"
    assert args.http_port is None and args.mllp_port is None  # defaults 8080/2575 = EXPOSE
    assert instruction("EXPOSE") == ["8080 2575"]


def test_image_is_slim_and_not_root() -> None:
    (base,) = instruction("FROM")
    assert base == "python:3.11-slim"
    users = instruction("USER")
    assert users and users[-1] not in ("root", "0")
    assert any("pip install" in run for run in instruction("RUN"))
    assert any("postgresql-client" in run for run in instruction("RUN"))  # pg_dump for backups


def test_readme_configuration_table_lists_every_setting() -> None:
    """The operator's table (README.md) lists exactly the settings of common/settings.py."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(CAREBRIDGE_[A-Z0-9_]+)` \|", readme, flags=re.MULTILINE)
    settings = list(env_names())
    assert len(rows) == len(set(rows)), "a setting is listed twice"
    assert sorted(set(settings) - set(rows)) == [], "settings missing from the README table"
    assert sorted(set(rows) - set(settings)) == [], "README rows that are no setting"


def compose_settings(compose: dict[str, Any], **replace: str) -> Settings:
    """What `docker compose up` gives carebridge: the env template, the compose environment, the command."""
    app = compose["services"]["carebridge"]
    values = {**env_file_keys(ROOT / "deploy" / "carebridge.env.example"), **app["environment"], **replace}
    args = build_parser().parse_args(app["command"][1:])
    return Settings.from_env(values, host=args.host)


def test_compose_runs_production_mode(compose: dict[str, Any]) -> None:
    environment = compose["services"]["carebridge"]["environment"]
    assert environment["CAREBRIDGE_ENV"] == "production"
    assert set(environment) <= set(env_names())
    settings = compose_settings(compose)
    assert settings.env == "production" and settings.host == "0.0.0.0"
    assert settings.http.tls_proxy and not settings.mllp.open


def test_the_env_template_is_refused_until_completed(compose: dict[str, Any]) -> None:
    """The untouched template names each placeholder (senders are registered with `carebridge senders`)."""
    problems = production_problems(compose_settings(compose), {})
    assert [p.split(" ")[0] for p in problems] == [
        "CAREBRIDGE_DATABASE_URL",
        "CAREBRIDGE_BASE_URL",
        "CAREBRIDGE_METRICS_TOKEN",
    ]
    assert all(p.split(" ")[1:5] == ["still", "holds", "the", "template"] for p in problems[:3])


def test_the_completed_env_template_passes(compose: dict[str, Any]) -> None:
    template = env_file_keys(ROOT / "deploy" / "carebridge.env.example")
    filled = {
        k: v.replace("CHANGE_ME", secrets.token_urlsafe(32)) for k, v in template.items() if "CHANGE_ME" in v
    }
    mtls = {
        "CAREBRIDGE_MLLP_TLS_CERT": "/app/var/tls/carebridge.pem",
        "CAREBRIDGE_MLLP_TLS_KEY": "/app/var/tls/carebridge.key",
        "CAREBRIDGE_MLLP_TLS_CLIENT_CA": "/app/var/tls/his-ca.pem",
        "CAREBRIDGE_MLLP_ALLOWED_SENDERS": "his.hospital.example=HIS_VN^BVDK_HN",
    }
    assert production_problems(compose_settings(compose, **filled, **mtls), {}) == []


def test_make_run_and_demo_stay_development_mode() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
    assert "run demo: export CAREBRIDGE_ENV := development" in makefile
    demo = (ROOT / "demo" / "his_day.py").read_text(encoding="utf-8")
    assert '"CAREBRIDGE_ENV": "development"' in demo
