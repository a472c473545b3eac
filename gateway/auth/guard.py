"""Per-request authentication and authorization decisions for the FHIR API.

Kept free of FastAPI so the same decisions serve any adapter: the HTTP layer
extracts the bearer token and calls :meth:`AccessGuard.authenticate`, then
:meth:`AccessGuard.authorize` for the interaction.  ``patient/`` scopes are
confined to the patient's compartment by the store itself
(``RequestContext.patient_ids``, see ``fhir_store/compartment.py``).
"""

from __future__ import annotations

from common import Unauthenticated
from gateway.auth.scopes import Interaction, require
from gateway.auth.tokens import Principal, TokenService


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
