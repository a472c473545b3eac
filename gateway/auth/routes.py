"""OAuth 2.0 token endpoint, JWKS and SMART discovery (RFC 6749 §4.4, RFC 7523, SMART v2).

Token errors follow RFC 6749 §5.2 (``{"error": "invalid_client"}``) rather than
OperationOutcome, because OAuth clients expect that shape.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from gateway.auth.login import TokenLogin
from gateway.auth.scopes import ROLE_CEILINGS
from gateway.auth.tokens import TokenService
from gateway.http.request_context import REQUEST_ID_KEY


def build_auth_router(login: TokenLogin, tokens: TokenService) -> APIRouter:
    router = APIRouter(tags=["auth"])

    oauth_error = {"description": "RFC 6749 §5.2 error object (`error`, `error_description`)"}

    @router.post(
        "/auth/token",
        summary="OAuth 2.0 client_credentials token endpoint",
        description=(
            "Client authentication: `client_secret_basic` (HTTP Basic), `client_secret_post` or "
            "`private_key_jwt`. Repeated failures lock the client id and the source address for a while "
            "(429 with `Retry-After`)."
        ),
        responses={400: oauth_error, 401: oauth_error, 429: oauth_error},
    )
    async def token_endpoint(request: Request) -> JSONResponse:
        values = {k: str(v) for k, v in (await request.form()).items()}
        reply = await login.token(
            values,
            request.headers.get("authorization"),
            request.client.host if request.client else "unknown",
            str(request.scope.get(REQUEST_ID_KEY) or ""),
            str(request.url_for("token_endpoint")),
        )
        return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)

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
                "token_endpoint_auth_methods_supported": [
                    "client_secret_basic",
                    "client_secret_post",
                    "private_key_jwt",
                ],
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
