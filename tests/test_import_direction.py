"""Dependencies point one way (docs/architecture.md): no package imports one that sits above it.

Every import counts, function-level ones too: a lazy import dodges an import
cycle at start-up but still couples the lower package to the upper one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = frozenset({"common", "mappers", "fhir_store", "audit", "consent", "crm_bridge", "gateway"})
# What each package must never import (the packages above it).
FORBIDDEN: dict[str, frozenset[str]] = {
    "common": OURS - {"common"},
    "mappers": OURS - {"common", "mappers"},
    "fhir_store": frozenset({"mappers", "audit", "consent", "crm_bridge", "gateway"}),
    "audit": frozenset({"consent", "crm_bridge", "gateway"}),
    "consent": frozenset({"crm_bridge", "gateway"}),
    "crm_bridge": frozenset({"gateway"}),
}
# The Alembic environment collects every package's tables for autogenerate.
EXEMPT = {"fhir_store/migrations/env.py"}
KNOWN: set[tuple[str, str]] = set()  # (file, package) pairs tolerated for now: none


def _imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_package_imports_one_above_it(package: str) -> None:
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        if name in EXEMPT:
            continue
        for imported in sorted(_imported_packages(path) & FORBIDDEN[package]):
            if (name, imported) not in KNOWN:
                wrong.append(f"{name} imports {imported}")
    assert wrong == []
