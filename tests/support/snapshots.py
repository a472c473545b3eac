"""A database's Patients, Encounters and Appointments of one assigning authority, comparable across runs.

Server ids differ between runs, so each resource is keyed by its business
identifiers, references are rewritten to those keys, ``id`` and the version
parts of ``meta`` are dropped, and the authority (which namespaces a run) is replaced by ``AUTH``.
"""

from __future__ import annotations

from typing import Any

import orjson

from fhir_store import FhirStore
from fhir_store.search import parse_query

TYPES = ("Patient", "Encounter", "Appointment")


def resources_of(store: FhirStore, auth: str) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    keys: dict[str, str] = {}
    for resource_type in TYPES:
        page = store.search(parse_query(resource_type, [("_count", "500")]))
        for match in page.matches:
            resource = match.resource()
            ids = sorted(f"{i.get('system')}|{i.get('value')}" for i in resource.get("identifier", []))
            if not any(f"/{auth}|" in i for i in ids):
                continue
            key = f"{resource_type}:{ids[0]}"
            keys[f"{resource_type}/{match.id}"] = key
            body = {k: v for k, v in resource.items() if k not in ("id", "meta")}
            meta = {
                k: v for k, v in resource.get("meta", {}).items() if k not in ("versionId", "lastUpdated")
            }
            found[key] = {**body, "meta": meta} if meta else body
    text = orjson.dumps(found, option=orjson.OPT_SORT_KEYS).decode()
    for reference, key in keys.items():
        text = text.replace(f'"{reference}"', f'"{key}"')
    canonical: dict[str, dict[str, Any]] = orjson.loads(text.replace(auth, "AUTH"))
    return canonical
