"""The per-CRM projection allowlist.

Why (Decree 356/2025/ND-CP Art. 7 minimum necessary; ISO/IEC 27001:2022
A.8.11): what a CRM may receive is *listed*, per CRM client, in a config file;
a field that is not listed never leaves, and a field name we do not know is a
configuration error (a typo must not silently widen or narrow disclosure).
The file format is documented in ``config/crm_projection.example.yaml`` and
``docs/crm-integration.md``.

Each CRM also declares the ``purposes`` it serves (Law 91/2025/QH15 Art. 9:
consent is per purpose and per recipient): a Consent that names no recipient
reaches only the CRMs serving its purpose (``consent.pdp.decide``), so a
care consent never reaches the marketing CRM.  A CRM without ``purposes``
serves none and receives only what consents naming it allow.

The bridge's other settings (``CAREBRIDGE_CRM_*``) are the ``crm`` group of
the settings tree, :class:`common.settings.CrmSettings`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from common import InvalidInput
from consent import PURPOSES
from crm_bridge.projection import PROJECTION_FIELDS

# The allowlist's vocabulary is what the projection code can build (one list, in projection.py).
KNOWN_FIELDS: Mapping[str, frozenset[str]] = PROJECTION_FIELDS
EVENT_TYPES = (
    "patient.upserted",
    "appointment.booked",
    "appointment.rescheduled",
    "appointment.cancelled",
    "appointment.noshow",
    "appointment.fulfilled",
    "appointment.rejected",
    "encounter.completed",
    "consent.changed",
    "patient.erased",
    "pseudonym.rotated",
    "patient.merged",
)


@dataclass(frozen=True)
class CrmClient:
    """One CRM: its OAuth client id (role ``crm``), the fields it may receive, the purposes it serves."""

    crm_id: str
    fields: Mapping[str, frozenset[str]]
    purposes: frozenset[str] = frozenset()

    def allows(self, kind: str, name: str) -> bool:
        return name in self.fields.get(kind, frozenset())


def _purposes(crm_id: object, spec: Any) -> frozenset[str]:
    """The purposes a CRM declares (``purposes: [appointment-reminder, ...]``); unknown ones are errors."""
    names = (spec or {}).get("purposes") or []
    if not isinstance(names, list):
        raise InvalidInput("purposes must be a list", location=f"clients.{crm_id}.purposes")
    unknown = sorted(set(map(str, names)) - set(PURPOSES))
    if unknown:
        raise InvalidInput(f"unknown purpose(s) {unknown}", location=f"clients.{crm_id}.purposes")
    return frozenset(map(str, names))


@dataclass(frozen=True)
class ProjectionConfig:
    clients: Mapping[str, CrmClient] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any) -> ProjectionConfig:
        if not data:
            return cls()
        if not isinstance(data, dict) or not isinstance(data.get("clients"), dict):
            raise InvalidInput("projection config needs a 'clients' mapping", location="clients")
        clients: dict[str, CrmClient] = {}
        for crm_id, spec in data["clients"].items():
            allowed: dict[str, frozenset[str]] = {}
            for kind, names in ((spec or {}).get("fields") or {}).items():
                if kind not in KNOWN_FIELDS:
                    raise InvalidInput(
                        f"unknown projection kind {kind!r}", location=f"clients.{crm_id}.fields"
                    )
                unknown = set(names or ()) - KNOWN_FIELDS[kind]
                if unknown:
                    raise InvalidInput(
                        f"unknown {kind} field(s) {sorted(unknown)}",
                        location=f"clients.{crm_id}.fields.{kind}",
                    )
                allowed[kind] = frozenset(names or ())
            allowed.setdefault("patient", frozenset())
            allowed["patient"] = allowed["patient"] | {"pseudonym"}  # the subject is always the pseudonym
            clients[str(crm_id)] = CrmClient(str(crm_id), allowed, _purposes(crm_id, spec))
        return cls(clients)

    @classmethod
    def load(cls, path: str) -> ProjectionConfig:
        file = Path(path)
        if not path or not file.exists():
            return cls()  # no file: no CRM client, nothing leaves (default deny)
        return cls.parse(yaml.safe_load(file.read_text(encoding="utf-8")))
