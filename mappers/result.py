"""The output of a mapping: a FHIR R4 transaction Bundle as a plain dict.

The store applies it with standard transaction semantics
(https://hl7.org/fhir/R4/http.html#transaction): ``urn:uuid`` fullUrls are
resolved to the assigned ids, conditional PUT/POST upsert by business
identifier, so the mappers never need to read the store.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

JSON = dict[str, Any]


def identifier_token(system: str, value: str) -> str:
    """``system|value`` search token, percent-encoded except for ``:/|`` (readable for usual ids)."""
    return quote(f"{system}|{value}", safe=":/|")


@dataclass(frozen=True, slots=True)
class MappingResult:
    bundle: JSON  # FHIR R4 Bundle, type "transaction"
    event: str  # "ADT^A04", "SIU^S12", ...
    patient_key: str | None  # "<authority>|<id>", see mappers.hl7_message.patient_key
    event_time: str | None = None  # FHIR instant of EVN-2/EVN-6/MSH-7 (mappers.event_time)
    event_time_us: int | None = None  # the same, microseconds since the epoch (UTC), for ordering


@dataclass(slots=True)
class BundleBuilder:
    """Collects transaction entries; ``new_id`` is injectable for deterministic tests."""

    new_id: Callable[[], str] = field(default=lambda: str(uuid.uuid4()))
    entries: list[JSON] = field(default_factory=list)

    def add(self, resource: JSON, request: JSON) -> str:
        """Append an entry and return its ``urn:uuid`` fullUrl for references."""
        full_url = f"urn:uuid:{self.new_id()}"
        self.entries.append({"fullUrl": full_url, "resource": resource, "request": request})
        return full_url

    def put(self, resource: JSON, system: str, value: str) -> str:
        """Conditional update keyed by business identifier (create if absent, replace if one match)."""
        url = f"{resource['resourceType']}?identifier={identifier_token(system, value)}"
        return self.add(resource, {"method": "PUT", "url": url})

    def create_if_absent(self, resource: JSON, system: str, value: str) -> str:
        """Conditional create: keeps an existing resource untouched (partial data never wipes)."""
        request = {
            "method": "POST",
            "url": resource["resourceType"],
            "ifNoneExist": f"identifier={identifier_token(system, value)}",
        }
        return self.add(resource, request)

    def bundle(self) -> JSON:
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}
