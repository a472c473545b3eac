"""The CRM bridge's part of the one registration (``fhir_store.registry``).

Its tables, and the HIS booking answer column sealed under the store's content
key.  The columns sealed under the CRM field key are not the store's business:
``crm_bridge.field_keys`` moves those.
"""

from __future__ import annotations

from crm_bridge.schema import HIS_LAST_ERROR, metadata
from fhir_store import Registry


def register(registry: Registry) -> None:
    registry.add_tables(metadata)
    registry.add_sealed(HIS_LAST_ERROR)
