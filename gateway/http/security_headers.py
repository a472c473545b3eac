"""Response headers of every route that may carry patient data: no caching, no content sniffing.

Why: a FHIR resource, a CRM projection, a privacy request or an audit event
left in a browser cache or an intermediary (``Cache-Control: no-store``,
RFC 9111 §5.2.2.5) is a copy nobody audits or erases (ISO/IEC 27001:2022
A.8.12 data leakage prevention; Law 91/2025/QH15 Art. 14 erasure); a browser
that sniffs a JSON body as HTML turns stored text into script
(``X-Content-Type-Options: nosniff``, WHATWG Fetch §3.6).  The OAuth token
endpoint needs ``no-store`` too (RFC 6749 §5.1).

A pure ASGI middleware, outermost but for the proxy headers, so error
responses (401/403 OperationOutcomes, the 500 of the request-context
middleware) carry the headers as well.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: Path prefixes of the routes that answer with PHI or credentials.
PHI_PREFIXES = ("/fhir", "/crm/", "/privacy/", "/auth/", "/console")
_REPLACED = frozenset({b"cache-control", b"x-content-type-options", b"pragma"})
_HEADERS = [(b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff")]


def is_phi_path(path: str) -> bool:
    return path == "/fhir" or path.startswith(PHI_PREFIXES)


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not is_phi_path(str(scope.get("path", ""))):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", ()) if k.lower() not in _REPLACED]
                message["headers"] = [*kept, *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)
