"""Dependencies point one way (docs/architecture.md "Packages and dependency direction").

import-linter enforces it (``[tool.importlinter]`` in pyproject.toml, also run by
``make lint``); these tests make ``pytest`` enforce it too, and fail if the
contract drifts from the documented layering or stops looking at our code.
Every import counts, function-level and ``TYPE_CHECKING`` ones too: a lazy
import dodges an import cycle at start-up but still couples the lower package
to the upper one.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"common", "mappers", "fhir_store", "audit", "consent", "crm_bridge", "gateway"}
# Highest first; "a | b" are independent siblings (neither imports the other).
LAYERS = ["gateway", "crm_bridge", "consent", "audit", "fhir_store | mappers", "common"]


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def test_the_contract_is_the_documented_layering() -> None:
    pyproject = _pyproject()
    config = pyproject["tool"]["importlinter"]
    assert set(config["root_packages"]) == PACKAGES
    installed = {p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert installed == PACKAGES  # a new package must be placed in the layers
    (layers,) = [c for c in config["contracts"] if c["id"] == "layers"]
    assert layers["type"] == "layers"
    assert layers["layers"] == LAYERS
    # No exemptions: ignore_imports / unmatched_ignore_imports_alerting would weaken it.
    assert set(layers) == {"id", "name", "type", "layers"}


def test_import_linter_keeps_every_contract() -> None:
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0


def test_import_linter_sees_our_imports(tmp_path: Path) -> None:
    """The same tool on a reversed rule fails: the graph it checks is the real one."""
    reversed_rule = tmp_path / ".importlinter"
    reversed_rule.write_text(
        "[importlinter]\nroot_packages =\n    common\n    gateway\n\n"
        "[importlinter:contract:reversed]\nname = reversed\ntype = layers\nlayers =\n    common\n    gateway\n",
        encoding="utf-8",
    )
    assert lint_imports(config_filename=str(reversed_rule), no_cache=True) == 1
