"""Binds authentication and authorization into the FHIR HTTP routes.

``install(app, runtime)`` adds the token endpoint/JWKS/SMART discovery and
replaces the routes' ``rest_context`` dependency with one that requires a
valid bearer token and the scope for the route's interaction (deny by
default, ISO/IEC 27001 A.5.15/A.8.2/A.8.5).  Denials are audited as
AuditEvents with outcome 12 (major failure) before the 401/403 OperationOutcome goes out.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request

from common.errors import CarebridgeError, Forbidden
from fhir_store.model import RequestContext
from fhir_store.validation import SUPPORTED_TYPES
from gateway.auth.clients import ClientRegistry
from gateway.auth.guard import AccessGuard
from gateway.auth.routes import build_auth_router
from gateway.auth.scopes import ROLE_CHANNELS, Interaction
from gateway.auth.tokens import Principal
from gateway.http.request_context import REQUEST_ID_KEY

if TYPE_CHECKING:
    from gateway.runtime import Runtime


def interaction_of(method: str, path: str) -> Interaction | None:
    """The SMART interaction a FHIR route template needs (None: checked per resource by the hooks)."""
    if path in ("/fhir", "/fhir/_history", "/fhir/metadata"):
        return None
    if path.endswith("/_search") or (path == "/fhir/{type}" and method == "GET"):
        return "s"
    if path == "/fhir/{type}/_history":
        return "s"
    if method == "POST":
        return "c" if path == "/fhir/{type}" else "r"
    if method == "PUT":
        return "u"
    if method == "DELETE":
        return "d"
    return "r"


_AUDIT_INTERACTION: dict[str | None, str] = {
    "r": "read",
    "s": "search-type",
    "c": "create",
    "u": "update",
    "d": "delete",
    None: "transaction",
}


def install(app: FastAPI, runtime: Runtime) -> None:
    """Routes and the authenticated context; the scope check inside the store is the
    ``scope-policy`` stage of the runtime's hook chain (``gateway.store_pipeline``)."""
    tokens = runtime.tokens
    guard = AccessGuard(tokens)
    app.include_router(build_auth_router(ClientRegistry(runtime.engine), tokens))
    audit = runtime.audit

    async def authenticated_context(request: Request) -> RequestContext:
        client = request.client
        request_id = str(request.scope.get(REQUEST_ID_KEY) or uuid.uuid4().hex)
        address = client.host if client else None
        route = request.scope.get("route")
        path = str(getattr(route, "path", request.url.path))
        resource_type = str(request.path_params.get("type") or ("Patient" if "$everything" in path else ""))
        principal: Principal | None = None
        try:
            principal = guard.authenticate(request.headers.get("authorization"))
            interaction = interaction_of(request.method, path)
            if interaction is not None and resource_type in SUPPORTED_TYPES:
                guard.authorize(principal, resource_type, interaction)
            elif "fhir" not in ROLE_CHANNELS.get(principal.role, frozenset()):
                raise Forbidden(f"role '{principal.role}' has no access to the FHIR API", location="scope")
        except CarebridgeError as exc:
            if audit is not None:
                audit.record_denial(
                    RequestContext(
                        request_id,
                        client_id=principal.client_id if principal else "unauthenticated",
                        role=principal.role if principal else "unknown",
                        channel="rest",
                        source_address=address,
                    ),
                    _AUDIT_INTERACTION.get(interaction_of(request.method, path), "transaction"),
                    reason=exc.message,
                )
            raise
        confined = (principal.patient_id,) if principal.role == "patient" and principal.patient_id else ()
        return RequestContext(
            request_id=request_id,
            client_id=principal.client_id,
            role=principal.role,
            channel="rest",
            source_address=address,
            patient_ids=confined,
            grants=tuple(str(s) for s in principal.scopes),
        )

    app.state.context_provider = authenticated_context
