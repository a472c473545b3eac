"""``carebridge crm ...`` key management commands (both backends)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main


def test_crm_cli_rotation_and_status(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CAREBRIDGE_CRM_KEY_FILE", str(tmp_path / "keys.json"))
    assert main(["crm", "rotate-field-key", "--database-url", database_url]) == 0
    assert "f1 -> f2" in capsys.readouterr().out
    assert main(["crm", "rotate-pseudonym-key", "--crm", "crm-main", "--database-url", database_url]) == 0
    assert "re-keyed" in capsys.readouterr().out
    assert main(["crm", "status", "--database-url", database_url]) == 0
    assert "outbox events" in capsys.readouterr().out
