"""The administrator's page at ``/console/admin``: people, OAuth clients, HL7 senders (issue #19 item 2).

So the command line is not the only way to manage who may sign in and which
systems may call carebridge.  The page is a thin adapter over the same domain
classes the CLI uses (``gateway.auth.users.UserDirectory``,
``gateway.auth.clients.ClientRegistry``); every change, refused ones too, is one
AuditEvent like the CLI's (DICOM 110113 Security Alert, subtype
``users-<command>`` / ``clients-<command>``) naming the administrator, never a
password or secret (ISO/IEC 27001:2022 A.5.16, A.5.18, A.8.15).  A one-time
password or client secret is shown once, in the answer to the POST that made
it (``Cache-Control: no-store``), and stored only hashed.  HL7 senders are only
listed here; their editing page is ``/console/senders``.  Nothing here shows
patient data: an administrator sees none (``gateway.console.roles``).
"""

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from common import CarebridgeError
from gateway.auth.clients import ClientRegistry
from gateway.auth.scopes import ROLES as CLIENT_ROLES
from gateway.auth.sessions import Session
from gateway.auth.users import PEOPLE_ROLES
from gateway.console.web import Console, console_of, person
from gateway.sender_registry import SenderRegistry

#: DICOM 110113 Security Alert: who may sign in or call carebridge is security configuration.
SECURITY_ALERT = "110113"
_USER = "{username}"
_CLIENT = "{client_id}"
_USER_STEPS = ("disable", "enable", "reset-password")
_CLIENT_STEPS = ("disable", "enable")


router = APIRouter(include_in_schema=False)
PEOPLE = Depends(person("users"))
SYSTEMS = Depends(person("clients"))


def _clients(console: Console) -> ClientRegistry:
    runtime = console.runtime
    return ClientRegistry(runtime.engine, secret_log2n=runtime.settings.auth.secret_log2n)


async def render(request: Request, session: Session, status: int = 200, **shown: Any) -> Response:
    console = console_of(request)
    users, clients, senders = console.users, _clients(console), SenderRegistry(console.runtime.engine)

    def read() -> dict[str, Any]:
        return {"users": users.list(), "clients": clients.list(), "senders": senders.list()}

    lists = await run_in_threadpool(read)
    return console.page(
        request,
        "admin.html",
        session,
        status=status,
        people_roles=PEOPLE_ROLES,
        client_roles=CLIENT_ROLES,
        done=request.query_params.get("done"),
        **lists,
        **shown,
    )


async def audited(
    request: Request, session: Session, subtype: str, what: str, outcome: str, *, ok: bool
) -> None:
    console = console_of(request)
    await console.audit(
        request,
        session,
        event_type=SECURITY_ALERT,
        subtype=subtype,
        status=200 if ok else 400,
        description=f"{what}: {outcome}",
    )


@router.get("/console/admin")
async def admin(request: Request, session: Annotated[Session, PEOPLE]) -> Response:
    return await render(request, session)


@router.post("/console/admin/users")
async def add_user(
    request: Request,
    session: Annotated[Session, PEOPLE],
    username: Annotated[str, Form(max_length=64)],
    role: Annotated[str, Form(max_length=40)],
    display_name: Annotated[str, Form(max_length=200)],
    email: Annotated[str, Form(max_length=254)] = "",
) -> Response:
    users = console_of(request).users
    try:
        user, one_time = await run_in_threadpool(
            lambda: users.add(username, role, display_name, email=email.strip() or None)
        )
    except CarebridgeError as exc:
        await audited(
            request,
            session,
            "users-add",
            f"user {username}",
            f"refused ({exc.location or 'input'})",
            ok=False,
        )
        return await render(request, session, status=exc.http_status, error=exc.message)
    await audited(request, session, "users-add", f"user {username}", f"added with role {user.role}", ok=True)
    return await render(request, session, shown_user=user.username, one_time=one_time)


@router.post(f"/console/admin/users/{_USER}/{{step}}")
async def change_user(
    request: Request, username: str, step: str, session: Annotated[Session, PEOPLE]
) -> Response:
    console = console_of(request)
    users = console.users
    if step not in _USER_STEPS:
        return console.page(request, "error.html", session, status=404, message="unknown action")
    if username == session.username and step == "disable":
        return await render(request, session, status=409, error="you cannot disable your own account")
    one_time = None
    try:
        if step == "reset-password":
            one_time = await run_in_threadpool(users.reset_password, username)
            done = "password reset"
        else:
            await run_in_threadpool(users.set_active, username, step == "enable")
            done = f"{step}d"
    except CarebridgeError as exc:
        await audited(
            request,
            session,
            f"users-{step}",
            f"user {username}",
            f"refused ({exc.location or 'input'})",
            ok=False,
        )
        return await render(request, session, status=exc.http_status, error=exc.message)
    await audited(request, session, f"users-{step}", f"user {username}", done, ok=True)
    if one_time is not None:
        return await render(request, session, shown_user=username, one_time=one_time)
    return RedirectResponse(f"/console/admin?done=users-{step}", status_code=303)


@router.post("/console/admin/clients")
async def add_client(
    request: Request,
    session: Annotated[Session, SYSTEMS],
    client_id: Annotated[str, Form(max_length=100)],
    role: Annotated[str, Form(max_length=40)],
    scopes: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    clients = _clients(console_of(request))
    try:
        secret = await run_in_threadpool(lambda: clients.add(client_id, role, scopes.strip() or None))
    except CarebridgeError as exc:
        await audited(request, session, "clients-add", f"client {client_id}", "refused", ok=False)
        return await render(request, session, status=exc.http_status, error=exc.message)
    await audited(request, session, "clients-add", f"client {client_id}", f"added with role {role}", ok=True)
    return await render(request, session, shown_client=client_id, secret=secret)


@router.post(f"/console/admin/clients/{_CLIENT}/{{step}}")
async def change_client(
    request: Request, client_id: str, step: str, session: Annotated[Session, SYSTEMS]
) -> Response:
    console = console_of(request)
    clients = _clients(console)
    if step not in _CLIENT_STEPS:
        return console.page(request, "error.html", session, status=404, message="unknown action")
    try:
        await run_in_threadpool(clients.set_active, client_id, step == "enable")
    except CarebridgeError as exc:
        await audited(request, session, f"clients-{step}", f"client {client_id}", "refused", ok=False)
        return await render(request, session, status=exc.http_status, error=exc.message)
    await audited(request, session, f"clients-{step}", f"client {client_id}", f"{step}d", ok=True)
    return RedirectResponse(f"/console/admin?done=clients-{step}", status_code=303)
