"""The operator's console at ``/console``: server-rendered pages for people (issue #19).

Jinja2 templates with htmx for partial updates; no front-end build chain, and
every asset (stylesheet, htmx) is served by carebridge itself, because hospital
networks are often offline.  Vietnamese by default, English switchable
(``gateway.console.i18n``).  People sign in through carebridge's own OAuth 2.0
authorization-code flow with PKCE (``gateway.console.signin``).

Every console response carries a strict Content-Security-Policy (scripts and
styles from this origin only, no framing, forms post only here) and
``Cache-Control: no-store`` (``gateway.http.security_headers``).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.responses import RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.console import admin, audit_page, dashboard, messages, patients, privacy, senders, signin
from gateway.console.web import Console, CsrfRefused, NotAllowed, SignInRequired
from gateway.runtime import Runtime

STATIC = Path(__file__).resolve().parent / "static"
CONSOLE_PREFIXES = ("/console", "/auth/authorize")
#: OWASP secure headers: the console's own scripts and styles only, never framed, forms post here.
_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]

#: the pages' routers, in matching order: built once per process (at import), included by every app
ROUTERS: tuple[APIRouter, ...] = (
    signin.router,
    dashboard.router,
    patients.router,
    audit_page.router,
    privacy.router,
    admin.router,
    messages.router,
    senders.router,
)

__all__ = ["Console", "install"]


class ConsoleHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = str(scope.get("path", ""))
        if scope["type"] != "http" or not path.startswith(CONSOLE_PREFIXES):
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI, runtime: Runtime) -> Console:
    """The app's console: its :class:`Console` on ``app.state`` (where the handlers find it), the
    shared page routers, the static files and the secure headers."""
    console = Console(runtime)
    app.state.console = console

    async def sign_in_required(request: Request, exc: Exception) -> Response:
        if exc.args and exc.args[0] == "password":
            return RedirectResponse("/console/password", status_code=303)
        return console.to_sign_in(request)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        session = console.session_of(request)
        return console.page(request, "error.html", session, status=403, message="forbidden")

    async def csrf_refused(request: Request, exc: Exception) -> Response:
        return console.page(request, "error.html", None, status=403, message="csrf")

    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_exception_handler(NotAllowed, not_allowed)
    app.add_exception_handler(CsrfRefused, csrf_refused)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
    app.add_middleware(ConsoleHeadersMiddleware)
    return console
