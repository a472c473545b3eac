"""Shared helpers for the mapper tests: fixtures on disk and FHIR R4B validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from fhir.resources.R4B.bundle import Bundle

from mappers.hl7_message import parse_message
from mappers.result import MappingResult
from mappers.router import map_message

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "hl7v2"
GOOD = sorted(p.name for p in FIXTURES.glob("*.hl7") if not p.name.startswith("bad_"))
BAD = sorted(p.name for p in FIXTURES.glob("bad_*.hl7"))


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def map_fixture(name: str) -> MappingResult:
    return map_message(parse_message(raw(name)))


def validate_bundle(bundle: dict[str, Any]) -> None:
    """Every entry's resource and the Bundle itself must validate with fhir.resources R4B."""
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "transaction"
    for entry in bundle["entry"]:
        assert entry["fullUrl"].startswith("urn:uuid:")
        resource = entry["resource"]
        assert "id" not in resource and "meta" not in resource
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
    Bundle.model_validate(bundle)


def resources(result: MappingResult, resource_type: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in result.bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def entries(result: MappingResult, resource_type: str) -> list[dict[str, Any]]:
    return [e for e in result.bundle["entry"] if e["resource"]["resourceType"] == resource_type]
