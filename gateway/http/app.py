"""The FastAPI application: FHIR routes, health/metrics, error rendering, request context.

``create_app(runtime)`` is the only constructor; ``carebridge serve``, the
tests and the OpenAPI exporter all build the app through it.  The OpenAPI
document enumerates the resource types registered when the app is built
(``fhir_store.validation.SUPPORTED_TYPES``), so a type added by a later package
shows up in the committed ``openapi/openapi.json`` on the next export.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from fhir_store import SUPPORTED_TYPES
from gateway.auth.clients import ClientRegistry
from gateway.auth.login import TokenLogin
from gateway.auth.routes import build_auth_router
from gateway.auth.throttle import Throttle
from gateway.console import install as install_console
from gateway.http import (
    api_docs,
    audit_routes,
    bundle_routes,
    consent_routes,
    crm_routes,
    errors,
    fhir_read_routes,
    fhir_write_routes,
    health,
    privacy_routes,
)
from gateway.http.capability import SOFTWARE_VERSION
from gateway.http.input_guard import InputGuardMiddleware
from gateway.http.openapi_docs import document_edge_refusals
from gateway.http.request_context import RequestContextMiddleware
from gateway.http.security_headers import SecurityHeadersMiddleware
from gateway.production import refuse_weak_production
from gateway.runtime import Runtime

TITLE = "carebridge"
DESCRIPTION = (
    "FHIR R4 REST facade (application/fhir+json) over the carebridge store, "
    "plus health and metrics endpoints. See /fhir/metadata for the CapabilityStatement."
)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=TITLE, version=SOFTWARE_VERSION, description=DESCRIPTION, routes=app.routes)
    types = sorted(SUPPORTED_TYPES)
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            for param in operation.get("parameters", []):
                if param.get("in") == "path" and param.get("name") == "type":
                    param["schema"] = {"type": "string", "enum": types, "title": "Type"}
    document_edge_refusals(schema)
    app.openapi_schema = schema
    return schema


def token_login(runtime: Runtime) -> TokenLogin:
    """The token endpoint's logic for this process (``app.state.token_login``; tests set its clock)."""
    auth = runtime.settings.auth
    return TokenLogin(
        ClientRegistry(runtime.engine, secret_log2n=auth.secret_log2n),
        runtime.tokens,
        Throttle(runtime.engine, auth),
        runtime.audit,
        hash_concurrency=auth.hash_concurrency,
    )


def create_app(runtime: Runtime) -> FastAPI:
    """The app; in production mode (``CAREBRIDGE_ENV``) it refuses a weak configuration first
    (:class:`gateway.production.ProductionRefused`, one line per problem)."""
    refuse_weak_production(runtime.settings)
    app = FastAPI(
        title=TITLE,
        version=SOFTWARE_VERSION,
        description=DESCRIPTION,
        docs_url=None,  # api_docs serves Swagger UI from this process, not a CDN
        redoc_url=None,
    )
    app.state.runtime = runtime
    app.state.metrics = health.HttpMetrics()
    errors.install(app)
    app.include_router(health.router)
    # before the generic /fhir/{type} routes: AuditEvent is read-only and not a store type
    app.include_router(audit_routes.router)
    app.include_router(fhir_read_routes.router)
    app.include_router(fhir_write_routes.router)
    app.include_router(bundle_routes.router)
    app.include_router(crm_routes.router)
    app.include_router(crm_routes.reid_router)
    app.include_router(consent_routes.router)  # /privacy/v1/consents (issue #18 item 3)
    privacy_routes.install(app)  # /privacy/v1 (issue #6) + its deadline gauge
    # token endpoint, JWKS, SMART discovery; every route authenticates through gateway.http.principal
    app.state.token_login = token_login(runtime)
    app.include_router(build_auth_router(app.state.token_login, runtime.tokens))
    api_docs.install(app, TITLE)
    install_console(app, runtime)  # /console for people (issue #19)
    settings = runtime.settings
    app.add_middleware(
        InputGuardMiddleware,
        max_body_bytes=settings.max_body_bytes,
        max_json_depth=settings.http.max_json_depth,
    )
    app.add_middleware(RequestContextMiddleware, metrics=app.state.metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    trusted = runtime.settings.http.trusted_networks()
    if trusted:
        # X-Forwarded-For/-Proto only from these peers (the servers run with proxy_headers=False):
        # anyone else could otherwise choose the source address the audit trail records.
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=trusted)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app
