"""OAuth 2.0 token endpoint, JWKS and SMART discovery (RFC 6749 §4.4, RFC 7523, SMART v2).

Token errors follow RFC 6749 §5.2 (``{"error": "invalid_client"}``) rather than
OperationOutcome, because OAuth clients expect that shape.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from common import CarebridgeError, Unauthenticated
from gateway.auth.clients import ClientRegistry
from gateway.auth.scopes import ROLE_CEILINGS, grant, grantable
from gateway.auth.tokens import ASSERTION_TYPE, TokenService


def _oauth_error(error: str, description: str, status: int) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={"Cache-Control": "no-store"},
    )


def build_auth_router(clients: ClientRegistry, tokens: TokenService) -> APIRouter:
    router = APIRouter(tags=["auth"])

    oauth_error = {"description": "RFC 6749 §5.2 error object (`error`, `error_description`)"}

    @router.post(
        "/auth/token",
        summary="OAuth 2.0 client_credentials token endpoint",
        responses={400: oauth_error, 401: oauth_error},
    )
    async def token_endpoint(request: Request) -> JSONResponse:
        fields = dict((await request.form()).items())
        values = {k: str(v) for k, v in fields.items()}
        if values.get("grant_type") != "client_credentials":
            return _oauth_error("unsupported_grant_type", "only client_credentials is supported", 400)
        client_id = values.get("client_id", "")
        try:
            if values.get("client_assertion_type") == ASSERTION_TYPE:
                client = clients.get(client_id) if client_id else None
                if client is None:
                    raise Unauthenticated("unknown client")
                # audience: the configured token URL (tokens.token_url), never the Host header
                tokens.verify_client_assertion(client, values.get("client_assertion", ""))
            else:
                client = clients.authenticate_secret(client_id, values.get("client_secret", ""))
            # Narrow twice: to what the client was registered with, and to its role's ceiling.
            scopes = grant(grantable(client.role, client.scopes), values.get("scope"))
        except Unauthenticated as exc:
            return _oauth_error("invalid_client", exc.message, 401)
        except CarebridgeError as exc:
            return _oauth_error("invalid_scope", exc.message, 400)
        if not scopes and ROLE_CEILINGS.get(client.role):
            return _oauth_error("invalid_scope", "none of the requested scopes can be granted", 400)
        return JSONResponse(tokens.issue(client, scopes), headers={"Cache-Control": "no-store"})

    @router.get("/auth/jwks", summary="Public keys that sign access tokens")
    def jwks() -> JSONResponse:
        return JSONResponse(tokens.jwks())

    @router.get("/.well-known/smart-configuration", summary="SMART on FHIR discovery")
    def smart_configuration() -> JSONResponse:
        return JSONResponse(
            {
                "issuer": tokens.issuer,
                "jwks_uri": tokens.token_url.removesuffix("/token") + "/jwks",
                "token_endpoint": tokens.token_url,
                "grant_types_supported": ["client_credentials"],
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt"],
                "token_endpoint_auth_signing_alg_values_supported": ["ES256", "ES384", "RS384"],
                "scopes_supported": sorted({s for caps in ROLE_CEILINGS.values() for s in caps}),
                "capabilities": [
                    "client-confidential-symmetric",
                    "client-confidential-asymmetric",
                    "permission-v2",
                ],
            }
        )

    return router
