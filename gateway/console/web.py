"""The console's web plumbing: templates per language, the signed-in person, CSRF, audit of views.

Why in one place: every console route needs the same four things, and a route
that forgot one (a page without a session check, a form without CSRF, a view of
patient data without an AuditEvent) is exactly the gap issue #19 asks to close.
So pages get them through :func:`person` (a FastAPI dependency that
redirects to sign-in, checks the role and, for ``POST``, the CSRF token) and
:meth:`Console.page`, and patient views through :meth:`Console.audit_view`.

The console's routers are module-level (built once per process, like the FHIR
routers) and every app includes the same ones; a handler finds its app's
:class:`Console` on the request (:func:`console_of`), which ``install`` puts on
``app.state``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Collection
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from audit import TrailCheck, build_event, outcome_for_status
from fhir_store import RequestContext, now_us
from gateway.auth.purpose import ROLE_PURPOSES
from gateway.auth.sessions import COOKIE, Session, SessionStore
from gateway.auth.users import UserDirectory
from gateway.console.i18n import LANGUAGE_COOKIE, LANGUAGES, load_catalog, local_time, pick_language
from gateway.console.roles import may, roles_for
from gateway.runtime import Runtime

TEMPLATES = Path(__file__).resolve().parent / "templates"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
#: DICOM 110114 User Authentication (sign-in/out); 110110 Patient Record (a console view of one).
USER_AUTHENTICATION = "110114"
PATIENT_RECORD = "110110"


class SignInRequired(Exception):
    """No live session: the page answers with a redirect to sign-in (never with content)."""


class NotAllowed(Exception):
    """A signed-in person whose role may not use this page or action (403 page)."""


class CsrfRefused(Exception):
    """A state-changing request without this session's CSRF token (403 page)."""


@lru_cache(maxsize=len(LANGUAGES))
def _environment(language: str) -> Environment:
    """One Jinja environment per language and process: its templates are compiled once, on first use."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(("html",)),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    catalog = load_catalog(language)

    def gettext(message: str) -> str:
        return catalog.get(message, message)

    def ngettext(singular: str, plural: str, n: int) -> str:
        return gettext(singular if n == 1 else plural)

    env.install_gettext_callables(gettext, ngettext, newstyle=True)  # type: ignore[attr-defined]
    env.filters["local_time"] = local_time
    env.globals["lang"] = language
    env.globals["may"] = may
    return env


class Console:
    """What every console route uses; one per app (``app.state.console``)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.users = UserDirectory(runtime.engine, runtime.store.cipher, runtime.settings.console)
        self.sessions = SessionStore(runtime.engine, runtime.settings.console)
        self.environments = {language: _environment(language) for language in LANGUAGES}
        base = runtime.settings.base_url
        self.secure_cookies = runtime.settings.env == "production" or base.startswith("https://")
        #: the audit page's last chain verification per person (counts and a reason, no patient data)
        self.last_checks: dict[str, tuple[TrailCheck, int]] = {}

    # -- who is asking ------------------------------------------------------------------

    def session_of(self, request: Request) -> Session | None:
        return self.sessions.find(request.cookies.get(COOKIE))

    # -- rendering ----------------------------------------------------------------------

    def language(self, request: Request) -> str:
        return pick_language(request.cookies.get(LANGUAGE_COOKIE))

    def page(
        self, request: Request, template: str, session: Session | None, status: int = 200, **context: Any
    ) -> HTMLResponse:
        env = self.environments[self.language(request)]
        html = env.get_template(template).render(
            person=session,
            csrf_token=session.csrf_token if session else "",
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, status_code=status)

    def set_cookie(self, response: Response, name: str, value: str, *, max_age: int | None = None) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            httponly=True,
            samesite="strict",
            secure=self.secure_cookies,
            path="/",
        )

    @staticmethod
    def to_sign_in(request: Request) -> Response:
        """Sign-in redirect; htmx gets ``HX-Redirect`` so the whole page moves, not a fragment."""
        if request.headers.get("hx-request"):
            return Response(status_code=204, headers={"HX-Redirect": "/console/login"})
        return RedirectResponse("/console/login", status_code=303)

    # -- audit ----------------------------------------------------------------------------

    def context(
        self, request: Request, session: Session | None, username: str | None = None
    ) -> RequestContext:
        """The person as the audit trail names them: display name and username, and their role."""
        who = session.label if session is not None else (username or "anonymous")
        role = session.role if session is not None else "anonymous"
        return RequestContext(
            request_id=getattr(request.state, "request_id", None) or str(uuid.uuid4()),
            client_id=who[:200],
            role=role,
            channel="rest",
            source_address=request.client.host if request.client else None,
            # the role's default purpose of use (gateway.auth.purpose); none before sign-in
            purpose_of_use=ROLE_PURPOSES[role][0] if role in ROLE_PURPOSES else None,
        )

    async def audit(
        self,
        request: Request,
        session: Session | None,
        *,
        event_type: str,
        subtype: str,
        status: int,
        description: str,
        patient_ids: tuple[str, ...] = (),
        username: str | None = None,
    ) -> None:
        event = build_event(
            context=self.context(request, session, username),
            event_type=event_type,
            subtype=subtype,
            action="R" if event_type == PATIENT_RECORD else "E",
            outcome=outcome_for_status(status),
            outcome_desc=description[:300],
            patient_ids=patient_ids,
            recorded_us=now_us(),
        )
        audit = self.runtime.audit
        if audit is not None:
            await run_in_threadpool(audit.append, [event])

    async def audit_view(
        self, request: Request, session: Session, what: str, patient_ids: tuple[str, ...]
    ) -> None:
        """Every console view of patient data leaves an AuditEvent naming the person (issue #19)."""
        await self.audit(
            request,
            session,
            event_type=PATIENT_RECORD,
            subtype="console-view",
            status=200,
            description=f"console: {what}",
            patient_ids=patient_ids,
        )


def console_of(request: Request) -> Console:
    """The console of the app serving ``request`` (set by ``gateway.console.install``)."""
    console: Console = request.app.state.console
    return console


def person(action: str, *, password_change: bool = False) -> Callable[[Request], Any]:
    """A dependency: the session of a person whose role may do ``action`` (``gateway.console.roles``).

    A ``POST`` must carry the session's CSRF token.  A person holding a one-time
    password reaches nothing but the password page until they choose their own.
    """
    allowed: Collection[str] = frozenset(roles_for(action))

    async def dependency(request: Request) -> Session:
        session = await run_in_threadpool(console_of(request).session_of, request)
        if session is None:
            raise SignInRequired
        if session.must_change_password and not password_change:
            raise SignInRequired("password")
        if session.role not in allowed:
            raise NotAllowed
        if request.method not in ("GET", "HEAD"):
            presented = request.headers.get(CSRF_HEADER)
            if presented is None:
                form = await request.form()
                value = form.get(CSRF_FIELD)
                presented = value if isinstance(value, str) else None
            if not session.csrf_ok(presented):
                raise CsrfRefused
        return session

    return dependency
