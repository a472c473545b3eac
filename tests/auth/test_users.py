"""People accounts of the console: ``carebridge users``, Argon2id, one-time passwords, TOTP, lockout (#19 item 1)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest
from sqlalchemy import Engine, select

from audit.schema import audit_event
from common import AuditSettings, ConsoleSettings, InvalidInput, Unauthenticated, VersionConflict
from fhir_store import make_engine
from gateway.auth.schema import app_user
from gateway.auth.users import UserDirectory
from gateway.cli import main as cli
from gateway.runtime import Runtime
from gateway.settings import Settings
from tests.support.store_keys import cipher_for

#: Argon2id at its cheapest: the tests check behaviour, not cost (production keeps 64 MiB, 3 passes).
CHEAP = {"password_memory_kib": 8, "password_time_cost": 1}
PASSWORD = "mật-khẩu-đủ-dài-1"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url, pool_size=2)
    yield engine
    engine.dispose()


def directory(engine: Engine, **overrides: int) -> UserDirectory:
    return UserDirectory(engine, cipher_for(engine), ConsoleSettings(**{**CHEAP, **overrides}))


def test_add_sign_in_change_password(engine: Engine) -> None:
    users = directory(engine)
    user, one_time = users.add("binh.tran", "privacy_officer", "Trần Thị Bình", email="binh@bv.vn")
    assert one_time is not None and user.must_change_password and user.label == "Trần Thị Bình (binh.tran)"
    assert users.authenticate("binh.tran", one_time).role == "privacy_officer"
    with pytest.raises(InvalidInput) as short:
        users.change_password("binh.tran", one_time, "ngắn")
    assert short.value.location == "password"
    users.change_password("binh.tran", one_time, PASSWORD)
    assert not users.get("binh.tran").must_change_password
    with pytest.raises(Unauthenticated):
        users.authenticate("binh.tran", one_time)  # the one-time password is gone
    assert users.authenticate("binh.tran", PASSWORD).username == "binh.tran"
    with pytest.raises(VersionConflict):
        users.add("binh.tran", "clinician", "Someone Else")
    with pytest.raises(InvalidInput) as role:
        users.add("an.nguyen", "crm", "Nguyễn An")  # a system role, not a person's
    assert role.value.location == "role"
    with pytest.raises(InvalidInput):
        users.add("Binh Tran!", "clinician", "x")
    with pytest.raises(InvalidInput):
        users.add("same.name", "clinician", "Same", password="same.name")


def test_nothing_secret_in_clear_and_argon2id(engine: Engine) -> None:
    users = directory(engine)
    users.add("khoa.le", "admin", "Lê Khoa", password=PASSWORD)
    uri = users.enrol_totp("khoa.le")
    secret = pyotp.parse_uri(uri).secret
    with engine.connect() as conn:
        row = conn.execute(select(app_user).where(app_user.c.username == "khoa.le")).one()
    assert row.password_hash.startswith("$argon2id$") and PASSWORD not in row.password_hash
    assert row.totp_secret is not None and secret not in row.totp_secret
    assert "issuer=carebridge" in uri


def test_totp_is_required_once_enrolled_and_a_code_works_once(engine: Engine) -> None:
    users = directory(engine)
    users.add("lan.pham", "privacy_officer", "Phạm Lan", password=PASSWORD)
    totp = pyotp.TOTP(pyotp.parse_uri(users.enrol_totp("lan.pham")).secret)
    with pytest.raises(Unauthenticated):
        users.authenticate("lan.pham", PASSWORD)  # no code
    with pytest.raises(Unauthenticated):
        users.authenticate("lan.pham", PASSWORD, "000000" if totp.now() != "000000" else "111111")
    code = totp.now()
    assert users.authenticate("lan.pham", PASSWORD, code).username == "lan.pham"
    with pytest.raises(Unauthenticated):
        users.authenticate("lan.pham", PASSWORD, code)  # replayed (RFC 6238 §5.2)


def test_lockout_after_repeated_failures_and_the_same_answer_for_everyone(engine: Engine) -> None:
    users = directory(engine, lockout_failures=3, lockout_s=1)
    users.add("minh.do", "operator", "Đỗ Minh", password=PASSWORD)
    answers = set()
    for _ in range(3):
        with pytest.raises(Unauthenticated) as wrong:
            users.authenticate("minh.do", "sai mật khẩu rồi")
        answers.add(wrong.value.message)
    assert users.get("minh.do").locked(time.time_ns() // 1000)
    with pytest.raises(Unauthenticated) as locked:
        users.authenticate("minh.do", PASSWORD)  # right password, locked account
    with pytest.raises(Unauthenticated) as unknown:
        users.authenticate("nobody", PASSWORD)
    answers |= {locked.value.message, unknown.value.message}
    assert len(answers) == 1  # no oracle for which part was wrong
    time.sleep(1.1)  # lockout_s=1
    assert users.authenticate("minh.do", PASSWORD).username == "minh.do"
    users.set_active("minh.do", False)
    with pytest.raises(Unauthenticated):
        users.authenticate("minh.do", PASSWORD)
    users.set_active("minh.do", True)
    assert users.authenticate("minh.do", PASSWORD).username == "minh.do"


def test_users_commands_print_once_and_are_audited(
    database_url: str,
    engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key_file = tmp_path / "audit.pem"
    monkeypatch.setenv("CAREBRIDGE_AUDIT_KEY_FILE", str(key_file))
    for name, value in CHEAP.items():
        monkeypatch.setenv(f"CAREBRIDGE_CONSOLE_{name.upper()}", str(value))
    Runtime.create(
        Settings(database_url=database_url, audit=AuditSettings(key_file=str(key_file))), migrate=False
    ).close()
    url = ["--database-url", database_url]
    add = ["users", "add", "--username", "hoa.vu", "--role", "compliance_officer", "--display-name", "Vũ Hoa"]
    assert cli([*add, *url]) == 0
    one_time = capsys.readouterr().out.split("one-time password: ", 1)[1].strip()
    assert cli([*add, *url]) == 2  # exists
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert cli(["users", "reset-password", "--username", "hoa.vu", "--password-stdin", *url]) == 0
    assert "one-time password" not in capsys.readouterr().out
    assert cli(["users", "disable", "--username", "hoa.vu", *url]) == 0
    assert cli(["users", "list", *url]) == 0
    assert "hoa.vu\tcompliance_officer\tdisabled,no-totp\tVũ Hoa" in capsys.readouterr().out
    assert cli(["users", "enable", "--username", "hoa.vu", *url]) == 0
    assert cli(["users", "enrol-totp", "--username", "nobody", *url]) == 1
    users = directory(engine)
    with pytest.raises(Unauthenticated):
        users.authenticate("hoa.vu", one_time)
    assert users.authenticate("hoa.vu", PASSWORD).display_name == "Vũ Hoa"
    with engine.connect() as conn:
        events = [json.loads(bytes(r[0])) for r in conn.execute(select(audit_event.c.content))]
    alerts = [
        (e["subtype"][0]["code"], e["outcome"], e["outcomeDesc"])
        for e in events
        if e["subtype"][0]["code"].startswith("users-")
    ]
    assert alerts == [
        ("users-add", "0", "user hoa.vu: added with role compliance_officer"),
        ("users-add", "8", "user hoa.vu: refused (username)"),
        ("users-reset-password", "0", "user hoa.vu: password reset"),
        ("users-disable", "0", "user hoa.vu: disabled"),
        ("users-enable", "0", "user hoa.vu: enabled"),
        ("users-enrol-totp", "8", "user nobody: refused (username)"),
    ]
    assert not any(PASSWORD in json.dumps(e) or one_time in json.dumps(e) for e in events)


def test_an_unknown_username_costs_one_verification_at_the_configured_parameters(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No timing oracle: the unknown name is checked against a hash of the accounts' own cost."""
    users = directory(engine, password_memory_kib=16, password_time_cost=2)
    verified: list[str] = []
    real_verify = users._verify

    def spy(stored: str, password: str) -> bool:
        verified.append(stored)
        return real_verify(stored, password)

    monkeypatch.setattr(users, "_verify", spy)
    with pytest.raises(Unauthenticated):
        users.authenticate("nobody.at.all", PASSWORD)
    users.add("lan.pham", "clinician", "Phạm Lan", password=PASSWORD)
    with pytest.raises(Unauthenticated):
        users.authenticate("lan.pham", "sai mật khẩu rồi")
    assert len(verified) == 2
    assert verified[0].startswith("$argon2id$v=19$m=16,t=2,p=1$")
    assert verified[0].split("$")[3] == verified[1].split("$")[3]  # the same cost as the account's
