"""The ``carebridge`` console script ends without the interpreter's teardown, and loses nothing by it.

``gateway.cli.run`` runs the ``atexit`` handlers, flushes both streams and calls
``os._exit`` with the command's status: these tests check the status and the
output of a real subprocess, including output still sitting in a pipe buffer.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CAREBRIDGE = str(Path(sys.executable).with_name("carebridge"))


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [CAREBRIDGE, *args], capture_output=True, text=True, timeout=60, cwd=cwd, check=False
    )


def test_help_is_printed_whole_with_status_0(tmp_path: Path) -> None:
    result = _run("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("usage: carebridge")
    assert "FHIR-native HIS/CRM integration middleware" in result.stdout
    assert result.stdout.rstrip().endswith("show this help message and exit")  # the last line arrived


def test_a_usage_error_is_status_2_with_the_message_on_stderr(tmp_path: Path) -> None:
    result = _run("no-such-command", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice: 'no-such-command'" in result.stderr


def test_a_commands_output_and_status_survive_the_fast_exit(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'cli.db'}"
    added = _run(
        "senders",
        "add",
        "--application",
        "HIS_A",
        "--facility",
        "BV_A",
        "--network",
        "10.1.2.0/24",
        "--database-url",
        database,
        cwd=tmp_path,
    )
    assert added.returncode == 0, added.stderr
    listed = _run("senders", "list", "--database-url", database, cwd=tmp_path)
    assert listed.returncode == 0 and "HIS_A" in listed.stdout and "BV_A" in listed.stdout
