"""``make demo`` completes on loopback in well under the 90 s budget (issue #7 §5, "must show").

Runs the demo exactly as the Makefile target does (``python -m demo.his_day``
from the repository root) and checks its printed contract: AA for every good
sample, AE/AR for the malformed one, CRM events received, and the audit line.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from demo.his_day import DAY, REGISTRATIONS

ROOT = Path(__file__).resolve().parents[2]
# The sample record numbers, CCCD and BHYT must never appear in what the demo prints.
DIRECT_IDENTIFIERS = ("BN000123", "BN000999", "KH20261118-07", "079085001234", "DN4797912345678", "19851345")


@pytest.mark.slow
def test_make_demo_completes() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "demo.his_day"], cwd=ROOT, capture_output=True, text=True, timeout=90
    )
    elapsed = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert elapsed < 90
    for step in (REGISTRATIONS, *DAY):
        for name in step.files:
            line = next(line for line in out.splitlines() if line.strip().startswith(name))
            code = line.split()[1]
            assert code == "AA" if step.good else code in ("AE", "AR"), line
    assert re.search(r"^  ok \d+ events$", out, re.M), out
    assert re.search(r"CRM <- seq=\d+ encounter\.completed", out)
    assert re.search(r"CRM <- seq=\d+ appointment\.noshow", out)
    assert "replaces Patient/" in out  # the merged patient, read over FHIR
    assert "Demo completed" in out
    for value in DIRECT_IDENTIFIERS:
        assert value not in out
