"""Per-request authentication and authorization decisions for the FHIR API.

Kept free of FastAPI so the same decisions serve any adapter: the HTTP layer
extracts the bearer token and calls :meth:`AccessGuard.authenticate`, then
:meth:`AccessGuard.authorize` for the interaction.  ``patient/`` scopes are
confined to the patient's compartment (their Patient, Encounters and
Appointments): reads check membership, searches get a forced filter.
"""

from __future__ import annotations

from typing import Any

from common.errors import Forbidden, Unauthenticated
from gateway.auth.scopes import Interaction, require
from gateway.auth.tokens import Principal, TokenService

# Search parameter that pins a search to one patient's compartment.
COMPARTMENT_PARAM = {"Patient": "_id", "Encounter": "patient", "Appointment": "patient"}


class AccessGuard:
    def __init__(self, tokens: TokenService) -> None:
        self.tokens = tokens

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            raise Unauthenticated("missing bearer token", location="Authorization")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("expected 'Authorization: Bearer <token>'", location="Authorization")
        return self.tokens.verify(token.strip())

    def authorize(self, principal: Principal, resource_type: str, interaction: Interaction) -> str:
        """Return the scope context that allowed it (``system``/``user``/``patient``)."""
        return require(list(principal.scopes), principal.role, resource_type, interaction)

    @staticmethod
    def compartment_filter(principal: Principal, context: str, resource_type: str) -> tuple[str, str] | None:
        """A search parameter to add so a patient-context search sees only their own data."""
        if context != "patient":
            return None
        if not principal.patient_id or resource_type not in COMPARTMENT_PARAM:
            raise Forbidden("patient scopes need a patient-bound token", location="scope")
        return COMPARTMENT_PARAM[resource_type], principal.patient_id

    @staticmethod
    def check_compartment(principal: Principal, context: str, resource: dict[str, Any]) -> None:
        """Refuse a patient-context access to a resource outside the patient's compartment."""
        if context != "patient":
            return
        if not principal.patient_id or not in_compartment(resource, principal.patient_id):
            raise Forbidden("resource is outside the patient's compartment", location="scope")


def in_compartment(resource: dict[str, Any], patient_id: str) -> bool:
    ref = f"Patient/{patient_id}"
    resource_type = resource.get("resourceType")
    if resource_type == "Patient":
        return resource.get("id") == patient_id
    if resource_type == "Encounter":
        return (resource.get("subject") or {}).get("reference") == ref
    if resource_type == "Appointment":
        return any((p.get("actor") or {}).get("reference") == ref for p in resource.get("participant") or [])
    return False
