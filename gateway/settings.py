"""Runtime settings: defaults, overridden by ``CAREBRIDGE_*`` environment variables, then CLI flags.

The names are a contract (DESIGN.md §2): ``CAREBRIDGE_DATABASE_URL`` and the
``CAREBRIDGE_`` prefix for everything else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any

from fhir_store.database import DEFAULT_DATABASE_URL

ENV_PREFIX = "CAREBRIDGE_"


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    host: str = "127.0.0.1"
    http_port: int = 8080
    http_workers: int = 1  # extra processes share the HTTP socket (one core each)
    mllp_port: int = 2575
    log_level: str = "INFO"
    base_url: str = ""  # public base of the FHIR API; derived from the request when empty
    max_body_bytes: int = 4 * 1024 * 1024
    # MLLP
    mllp_max_message_bytes: int = 1024 * 1024
    mllp_idle_timeout_s: float = 300.0
    mllp_tls_cert: str = ""
    mllp_tls_key: str = ""
    mllp_tls_client_ca: str = ""  # set to require client certificates (mutual TLS)
    hl7_default_charset: str = "utf-8"
    hl7_sender_charsets: str = ""  # "APP^FAC=latin-1,OTHER=cp1258"
    hl7_strict: bool = False
    hl7_validate_resources: bool = False  # re-validate mapped resources (always on in strict mode)
    hl7_ingest_lanes: int = 2  # MLLP writer threads; one patient's messages always use the same lane
    hl7_group_max: int = 32  # messages waiting in a lane that share one transaction (group commit)
    db_pool_size: int = 16
    # audit (audit/): Ed25519 key file (created 0600 on first use), checkpoint interval,
    # and whether access events are buffered and appended in batches (see audit/hooks.py)
    audit_key_file: str = "var/audit-signing-key.pem"
    audit_checkpoint_every: int = 1000
    audit_async_reads: bool = True
    # encryption at rest of the FHIR store (fhir_store/content_cipher.py): JSON key file created
    # 0600 on first use; the environment variable CAREBRIDGE_STORE_KEYS (same JSON) overrides it
    store_key_file: str = "var/store-keys.json"
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra":
                continue
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is None:
                continue
            if f.type in ("int", int):
                values[f.name] = int(raw)
            elif f.type in ("float", float):
                values[f.name] = float(raw)
            elif f.type in ("bool", bool):
                values[f.name] = raw.strip().lower() in ("1", "true", "yes", "on")
            else:
                values[f.name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)

    def sender_charsets(self) -> dict[str, str]:
        """Per-sender default charset for messages with an empty MSH-18."""
        mapping: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in self.hl7_sender_charsets.split(","))):
            sender, _, charset = item.partition("=")
            mapping[sender.strip()] = charset.strip()
        return mapping
