"""Signing in to the console through carebridge's own authorization-code flow with PKCE.

The console is an OAuth 2.0 public client (RFC 6749 §4.1, RFC 7636):

1. ``GET /console/login`` makes a PKCE verifier and a ``state``, keeps both in a
   short-lived ``HttpOnly`` cookie and redirects to ``/auth/authorize``;
2. ``/auth/authorize`` shows the sign-in form (username, password, and the TOTP
   code when the account has a second factor), checks it in a worker thread
   (Argon2id is costly by design), and redirects back with a single-use code;
3. ``GET /console/callback`` checks ``state``, redeems the code with the
   verifier and starts the session (``gateway.auth.sessions``).

The sign-in form is protected against login CSRF with a double-submit token
(a ``SameSite=Strict`` cookie and a hidden field that must match).  Every
sign-in, refused ones too, and every sign-out is an AuditEvent (DICOM 110114)
naming the person; a refused one names the username typed, never the password.
In production mode, admin and privacy_officer accounts without a second factor
are refused (issue #19 item 1).
"""

import hmac
import secrets
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from common import CarebridgeError, Unauthenticated
from gateway.auth.authorize import (
    CONSOLE_CLIENT_ID,
    AuthorizationRequest,
    check_request,
    issue_code,
    new_verifier,
    redeem_code,
    s256,
)
from gateway.auth.sessions import COOKIE, Session
from gateway.auth.users import SECOND_FACTOR_ROLES
from gateway.console.i18n import LANGUAGE_COOKIE, LANGUAGES
from gateway.console.web import USER_AUTHENTICATION, console_of, person

PKCE_COOKIE = "cb_pkce"
LOGIN_CSRF_COOKIE = "cb_login_csrf"
_OAUTH_FIELDS = (
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
)


def _redirect_uri(request: Request) -> str:
    return str(request.url_for("console_callback"))


router = APIRouter(include_in_schema=False)


@router.get("/console/login")
async def console_login(request: Request) -> Response:
    console = console_of(request)
    verifier, state = new_verifier(), secrets.token_urlsafe(24)
    query = {
        "response_type": "code",
        "client_id": CONSOLE_CLIENT_ID,
        "redirect_uri": _redirect_uri(request),
        "state": state,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    response = RedirectResponse(f"/auth/authorize?{urlencode(query)}", status_code=303)
    console.set_cookie(response, PKCE_COOKIE, f"{state}.{verifier}", max_age=600)
    return response


def _checked(request: Request, values: dict[str, str | None]) -> AuthorizationRequest:
    return check_request(
        response_type=values.get("response_type"),
        client_id=values.get("client_id"),
        redirect_uri=values.get("redirect_uri"),
        state=values.get("state"),
        code_challenge=values.get("code_challenge"),
        code_challenge_method=values.get("code_challenge_method"),
        allowed_redirect=_redirect_uri(request),
    )


def _form(request: Request, oauth: AuthorizationRequest, status: int = 200, error: str = "") -> Response:
    console = console_of(request)
    token = secrets.token_urlsafe(24)
    hidden = {
        "response_type": "code",
        "client_id": oauth.client_id,
        "redirect_uri": oauth.redirect_uri,
        "state": oauth.state,
        "code_challenge": oauth.code_challenge,
        "code_challenge_method": "S256",
        "login_csrf": token,
    }
    response = console.page(request, "login.html", None, status=status, hidden=hidden, error=error)
    console.set_cookie(response, LOGIN_CSRF_COOKIE, token, max_age=600)
    return response


@router.get("/auth/authorize")
async def authorize_form(request: Request) -> Response:
    console = console_of(request)
    try:
        oauth = _checked(request, {k: request.query_params.get(k) for k in _OAUTH_FIELDS})
    except CarebridgeError as exc:
        return console.page(request, "error.html", None, status=400, message=exc.message)
    return _form(request, oauth)


@router.post("/auth/authorize")
async def authorize_submit(
    request: Request,
    username: Annotated[str, Form(max_length=64)],
    password: Annotated[str, Form(max_length=256)],
    login_csrf: Annotated[str, Form(max_length=100)],
    code: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    console = console_of(request)
    form = await request.form()
    try:
        oauth = _checked(request, {k: str(form.get(k) or "") or None for k in _OAUTH_FIELDS})
    except CarebridgeError as exc:
        return console.page(request, "error.html", None, status=400, message=exc.message)
    expected = request.cookies.get(LOGIN_CSRF_COOKIE) or ""
    if not expected or not hmac.compare_digest(expected, login_csrf):
        return _form(request, oauth, 403, "csrf")
    try:
        user = await run_in_threadpool(console.users.authenticate, username, password, code or None)
    except Unauthenticated:
        await console.audit(
            request,
            None,
            event_type=USER_AUTHENTICATION,
            subtype="console-login",
            status=401,
            description="console sign-in refused",
            username=f"{username[:64]} (typed)",
        )
        return _form(request, oauth, 401, "refused")
    production = console.settings.env == "production"
    if production and user.role in SECOND_FACTOR_ROLES and not user.totp_enabled:
        await console.audit(
            request,
            None,
            event_type=USER_AUTHENTICATION,
            subtype="console-login",
            status=403,
            description="console sign-in refused: second factor required for the role",
            username=user.label,
        )
        return _form(request, oauth, 403, "totp-required")
    issued = await run_in_threadpool(issue_code, console.runtime.engine, user.username, oauth)
    query = urlencode({"code": issued, "state": oauth.state})
    response = RedirectResponse(f"{oauth.redirect_uri}?{query}", status_code=303)
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/")
    return response


@router.get("/console/callback", name="console_callback")
async def console_callback(request: Request) -> Response:
    console = console_of(request)
    state, _, verifier = (request.cookies.get(PKCE_COOKIE) or "").partition(".")
    code = request.query_params.get("code") or ""
    if not state or not hmac.compare_digest(state, request.query_params.get("state") or ""):
        return console.page(request, "error.html", None, status=400, message="state")
    try:
        username = await run_in_threadpool(
            redeem_code,
            console.runtime.engine,
            code,
            client_id=CONSOLE_CLIENT_ID,
            redirect_uri=_redirect_uri(request),
            verifier=verifier,
        )
    except Unauthenticated as exc:
        return console.page(request, "error.html", None, status=400, message=exc.message)
    token = await run_in_threadpool(console.sessions.start, username)
    session = await run_in_threadpool(console.sessions.find, token)
    await console.audit(
        request,
        session,
        event_type=USER_AUTHENTICATION,
        subtype="console-login",
        status=200,
        description="console sign-in",
    )
    response = RedirectResponse("/console", status_code=303)
    response.delete_cookie(PKCE_COOKIE, path="/")
    console.set_cookie(response, COOKIE, token, max_age=console.settings.console.session_max_s)
    return response


@router.post("/console/logout")
async def console_logout(
    request: Request, session: Annotated[Session, Depends(person("dashboard"))]
) -> Response:
    console = console_of(request)
    await run_in_threadpool(console.sessions.end, request.cookies.get(COOKIE) or "")
    await console.audit(
        request,
        session,
        event_type=USER_AUTHENTICATION,
        subtype="console-logout",
        status=200,
        description="console sign-out",
    )
    response = console.page(request, "signed_out.html", None)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/console/password")
async def password_form(
    request: Request,
    session: Annotated[Session, Depends(person("dashboard", password_change=True))],
) -> Response:
    console = console_of(request)
    return console.page(request, "password.html", session)


@router.post("/console/password")
async def password_change(
    request: Request,
    session: Annotated[Session, Depends(person("dashboard", password_change=True))],
    current: Annotated[str, Form(max_length=256)],
    new: Annotated[str, Form(max_length=256)],
    code: Annotated[str, Form(max_length=10)] = "",
) -> Response:
    console = console_of(request)
    try:
        await run_in_threadpool(console.users.change_password, session.username, current, new, code or None)
    except CarebridgeError as exc:
        return console.page(request, "password.html", session, status=400, error=exc.message)
    await run_in_threadpool(console.sessions.end_all, session.username)
    await console.audit(
        request,
        session,
        event_type=USER_AUTHENTICATION,
        subtype="console-password",
        status=200,
        description="password changed; every session of the person ended",
    )
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


@router.get("/console/language/{language}")
async def language(request: Request, language: str) -> Response:
    console = console_of(request)
    response = RedirectResponse("/console", status_code=303)
    if language in LANGUAGES:
        console.set_cookie(response, LANGUAGE_COOKIE, language, max_age=365 * 86400)
    return response
