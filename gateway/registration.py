"""The one registration: every package's tables, resource types, search parameters and sealed columns.

Why here: importing a module registers nothing (``fhir_store.registry``), so
something must call each package's ``register`` — and the function that knows
every package belongs to the top layer.  :func:`register_all` calls them in
layer order (``fhir_store`` < ``audit`` < ``consent`` < ``crm_bridge`` <
``gateway``); ``gateway.runtime`` calls it before the store keys open (a first
start may rebuild the blind index from the search parameters, so they must all
be known), the CLI before ``store status|rewrap`` (sealed columns), and
``gateway.migrations`` hands its tables to Alembic.
"""

from __future__ import annotations

from audit import register_audit
from consent import register_consent
from crm_bridge import register_crm
from fhir_store import Registry, register_store
from gateway.auth.schema import APP_USER_TOTP_SEALED, SIGNING_KEY_SEALED
from gateway.auth.schema import metadata as auth_metadata
from gateway.privacy_clocks import metadata as privacy_clock_metadata
from gateway.sender_registry import metadata as sender_metadata


def register(registry: Registry) -> None:
    """The gateway's own tables: OAuth clients, token signing keys and console users' TOTP secrets
    (sealed under the store key), HL7 senders, and which privacy clocks were announced."""
    registry.add_tables(auth_metadata)
    registry.add_tables(sender_metadata)
    registry.add_tables(privacy_clock_metadata)
    registry.add_sealed(SIGNING_KEY_SEALED)
    registry.add_sealed(APP_USER_TOTP_SEALED)


def register_all() -> Registry:
    """Register every package, lowest layer first; idempotent, so every entry point may call it."""
    registry = Registry()
    register_store(registry)
    register_audit(registry)
    register_consent(registry)
    register_crm(registry)
    register(registry)
    return registry
