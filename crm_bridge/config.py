"""CRM bridge settings and the per-CRM projection allowlist.

Why (Decree 356/2025/ND-CP Art. 7 minimum necessary; ISO/IEC 27001:2022
A.8.11): what a CRM may receive is *listed*, per CRM client, in a config file;
a field that is not listed never leaves, and a field name we do not know is a
configuration error (a typo must not silently widen or narrow disclosure).
The file format is documented in ``config/crm_projection.example.yaml`` and
``docs/crm-integration.md``.

Settings come from ``CAREBRIDGE_CRM_*`` environment variables (or the
``Settings.extra`` mapping with the same lower-case names without prefix,
e.g. ``crm_his_mllp``), so the shared ``gateway.settings`` stays untouched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from common.errors import InvalidInput
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
)


@dataclass(frozen=True)
class CrmClient:
    """One CRM: its OAuth client id (role ``crm``) and the fields it may receive."""

    crm_id: str
    fields: Mapping[str, frozenset[str]]

    def allows(self, kind: str, name: str) -> bool:
        return name in self.fields.get(kind, frozenset())


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
            clients[str(crm_id)] = CrmClient(str(crm_id), allowed)
        return cls(clients)

    @classmethod
    def load(cls, path: str) -> ProjectionConfig:
        file = Path(path)
        if not path or not file.exists():
            return cls()  # no file: no CRM client, nothing leaves (default deny)
        return cls.parse(yaml.safe_load(file.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class CrmSettings:
    projection_file: str = "config/crm_projection.yaml"
    key_file: str = "var/crm-keys.json"
    # outbound booking (SIU^S12) to the HIS: "host:port"; empty disables the sender
    his_mllp: str = ""
    his_timeout_s: float = 10.0
    sending_app: str = "CAREBRIDGE"
    sending_facility: str = "CRM"
    receiving_app: str = "HIS"
    receiving_facility: str = "HIS"
    # webhook delivery
    webhook_max_attempts: int = 10
    webhook_backoff_base_s: float = 1.0
    webhook_backoff_max_s: float = 300.0
    webhook_timeout_s: float = 5.0
    poll_interval_s: float = 0.05
    # under a steady stream, a round that sent events waits this long before the next one, so
    # that each takes several events (fewer feed reads per event); an idle feed sends at once
    webhook_batch_window_s: float = 0.01
    signature_tolerance_s: int = 300

    @classmethod
    def from_sources(
        cls, extra: Mapping[str, str] | None = None, environ: Mapping[str, str] | None = None
    ) -> CrmSettings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = (extra or {}).get(f"crm_{f.name}")
            if raw is None:
                raw = env.get(f"CAREBRIDGE_CRM_{f.name.upper()}")
            if raw is None:
                continue
            if f.type in ("int", int):
                values[f.name] = int(raw)
            elif f.type in ("float", float):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        return cls(**values)

    def his_endpoint(self) -> tuple[str, int] | None:
        if not self.his_mllp:
            return None
        host, _, port = self.his_mllp.rpartition(":")
        return host or "127.0.0.1", int(port)
