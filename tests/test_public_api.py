"""Each package's public API is its ``__init__`` (docs/architecture.md "Packages and dependency direction").

import-linter's ``protected`` contracts (pyproject.toml, run by ``make lint`` and by
``tests/test_import_direction.py``) refuse an import of another package's module;
these tests check that every package below the gateway has such a contract, that
the contract shape really refuses a private import, and that every name a package
exports resolves.  Tests themselves may import internals (they are white-box).
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path
from typing import Any

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parent.parent
# gateway is the application at the top: nothing imports it, so it exports nothing.
LIBRARIES = ["common", "mappers", "fhir_store", "audit", "consent", "crm_bridge"]


def _contracts() -> list[dict[str, Any]]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        contracts: list[dict[str, Any]] = tomllib.load(f)["tool"]["importlinter"]["contracts"]
    return contracts


def test_every_library_package_protects_its_modules() -> None:
    protected = {
        (tuple(c["protected_modules"]), tuple(c["allowed_importers"]))
        for c in _contracts()
        if c["type"] == "protected"
    }
    assert protected == {((f"{p}.*",), (p,)) for p in LIBRARIES}
    for contract in _contracts():  # no exemptions
        assert "ignore_imports" not in contract


@pytest.mark.parametrize("package", LIBRARIES)
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    exported = module.__all__
    assert exported and len(set(exported)) == len(exported)
    for name in exported:
        value = getattr(module, name)
        assert not isinstance(value, type(importlib)), f"{package}.{name} is a module, export its names"


def test_the_protected_contract_refuses_a_private_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same contract shape on two packages: importing the root passes, a module fails."""
    for name in ("lowpkg", "highpkg"):
        (tmp_path / name).mkdir()
    (tmp_path / "lowpkg" / "__init__.py").write_text("from lowpkg.inner import thing\n", encoding="utf-8")
    (tmp_path / "lowpkg" / "inner.py").write_text("thing = 1\n", encoding="utf-8")
    high = tmp_path / "highpkg" / "__init__.py"
    config = tmp_path / ".importlinter"
    config.write_text(
        "[importlinter]\nroot_packages =\n    lowpkg\n    highpkg\n\n"
        "[importlinter:contract:public]\nname = public\ntype = protected\n"
        "protected_modules =\n    lowpkg.*\nallowed_importers =\n    lowpkg\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    high.write_text("from lowpkg import thing\n", encoding="utf-8")
    assert lint_imports(config_filename=str(config), no_cache=True) == 0
    high.write_text("from lowpkg.inner import thing\n", encoding="utf-8")
    assert lint_imports(config_filename=str(config), no_cache=True) == 1
