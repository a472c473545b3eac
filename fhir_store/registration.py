"""The store's part of the one registration (``fhir_store.registry``): its tables.

Its resource types (Patient, Encounter, Appointment) and their search
parameters are built into ``fhir_store.search_params``: they define the store.
"""

from __future__ import annotations

from fhir_store.registry import Registry
from fhir_store.schema import metadata


def register(registry: Registry) -> None:
    registry.add_tables(metadata)
