"""The audit trail's part of the one registration (``fhir_store.registry``): its tables."""

from __future__ import annotations

from audit.schema import metadata
from fhir_store import Registry


def register(registry: Registry) -> None:
    registry.add_tables(metadata)
