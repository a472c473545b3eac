"""Consent's part of the one registration (``fhir_store.registry``).

The ``Consent`` and ``Task`` (data-subject requests) resource types with their
search parameters, the patient-rights tables and their sealed free-text columns.
"""

from __future__ import annotations

from consent.purposes import CONSENT_SEARCH
from consent.rights.model import TASK_SEARCH
from consent.rights.schema import SEALED
from consent.rights.schema import metadata as rights_metadata
from fhir_store import Registry


def register(registry: Registry) -> None:
    registry.add_tables(rights_metadata)
    registry.add_resource_type(CONSENT_SEARCH)
    registry.add_resource_type(TASK_SEARCH)
    for columns in SEALED.values():
        registry.add_sealed(*columns.values())
