"""The committed openapi/openapi.json is what the app generates (regenerate with
``python -m gateway.http.export_openapi``).  Runs in a fresh interpreter so
resource types registered by other tests' imports cannot change the result."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_openapi_document_matches_app() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.http.export_openapi", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
