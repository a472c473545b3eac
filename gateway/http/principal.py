"""The authenticated principal of every HTTP channel: one FastAPI dependency, one denial audit.

Why: access is deny by default and every refusal is a security event
(ISO/IEC 27001:2022 A.5.15, A.8.2, A.8.5, A.8.15; IHE BALP outcome 12).  The
FHIR API, the CRM API (``/crm/v1``), re-identification and the patients'
rights API (``/privacy/v1``) differ only in what a caller must hold, so one
function decides for all of them (:func:`authenticate`) and an :class:`Access`
says what a route needs:

* ``FHIR``: the SMART scope of the route's interaction on its resource type
  (role ceiling and token scopes, :func:`gateway.auth.scopes.require`); routes
  without a ``{type}`` need the FHIR channel and are checked per resource by
  the store's scope-policy hook;
* ``CRM``: role channel ``crm`` and a client id the CRM projection lists
  (Decree 356/2025/ND-CP Art. 7: a processor sees only what it is configured for);
* ``REIDENTIFY``: role channel ``reidentify`` (privacy officers only);
* ``PRIVACY``: role channel ``privacy``; a patient token must be bound to its patient;
* ``PRIVACY_RECEIPT``: a configured CRM confirming an erasure (Law 91/2025/QH15 Art. 14).

Every authorised caller states a purpose of use (``X-Purpose-Of-Use``, defaulted and
bounded per role by :mod:`gateway.auth.purpose`); it rides on the context into every
AuditEvent of the request (``purposeOfEvent``, IHE BALP).

A missing or invalid token is a 401, a valid token that may not do this a 403.
Either is written to the audit trail exactly once, here, before the
OperationOutcome goes out: with the token's client id and role when the token
was valid (``unauthenticated``/``unknown`` only when it was not), and with the
request id the request-context middleware assigned, which the response echoes
in ``X-Request-ID`` so the refused caller and the auditor can name the same
event.  The dependency marks ``request.state`` so the error handler does not
record the denial a second time, and keeps the caller's context there so a
later refusal (store path, a route's own check) names the real client too.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from common import CarebridgeError, Forbidden
from fhir_store import SUPPORTED_TYPES, RequestContext
from gateway.auth.guard import AccessGuard
from gateway.auth.purpose import HEADER as PURPOSE_HEADER
from gateway.auth.purpose import purpose_for
from gateway.auth.scopes import ROLE_CHANNELS, Interaction, require, require_channel
from gateway.auth.tokens import Principal
from gateway.http.errors import AUDITED_STATE, CONTEXT_STATE
from gateway.http.request_context import REQUEST_ID_KEY
from gateway.http.responses import runtime_of

UNAUTHENTICATED = "unauthenticated"


@dataclass(frozen=True)
class Access:
    """What a route needs of its caller, and how its events are labelled."""

    name: str
    #: the ``ROLE_CHANNELS`` entry the caller's role must have
    channel: str
    #: subtype of a denial event; ``None``: the FHIR interaction of the route
    audit_as: str | None
    #: ``RequestContext.channel`` of the caller (and of its denial events)
    context_channel: Literal["rest", "crm"]
    #: FHIR: check the route's scope, confine patient tokens, carry the grants to the store
    scoped: bool = False
    #: the client must be a CRM with a configured projection
    configured_crm: bool = False
    #: a patient token must name its patient
    bound_patient: bool = False


FHIR = Access("fhir", "fhir", None, "rest", scoped=True)
CRM = Access("crm", "crm", "crm-api", "crm", configured_crm=True)
REIDENTIFY = Access("reidentify", "reidentify", "crm-api", "crm")
PRIVACY = Access("privacy", "privacy", "privacy-api", "rest", bound_patient=True)
PRIVACY_RECEIPT = Access("privacy_receipt", "crm", "privacy-api", "rest", configured_crm=True)


@dataclass(frozen=True)
class Caller:
    """The authenticated principal and the context its store calls and audit events carry."""

    principal: Principal
    context: RequestContext


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


def _route_path(request: Request) -> str:
    route = request.scope.get("route")
    return str(getattr(route, "path", request.url.path))


def _authorize(request: Request, access: Access, principal: Principal) -> None:
    """Raise :class:`Forbidden` unless ``principal`` may use this route."""
    if principal.role == "patient" and not principal.patient_id:
        # an unbound patient token would be confined to no compartment at all: fail closed
        raise Forbidden("this patient token is not bound to a patient", location="patient")
    if access.scoped:
        path = _route_path(request)
        resource_type = str(request.path_params.get("type") or ("Patient" if "$everything" in path else ""))
        interaction = interaction_of(request.method, path)
        if interaction is not None and resource_type in SUPPORTED_TYPES:
            require(list(principal.scopes), principal.role, resource_type, interaction)
        elif access.channel not in ROLE_CHANNELS.get(principal.role, frozenset()):
            raise Forbidden(f"role '{principal.role}' has no access to the FHIR API", location="scope")
        return
    require_channel(principal.role, access.channel)
    if access.configured_crm and principal.client_id not in runtime_of(request).crm.config.clients:
        raise Forbidden("this CRM client has no projection configured", location="client_id")
    if access.bound_patient and principal.role == "patient" and not principal.patient_id:
        raise Forbidden("this patient token is not bound to a patient", location="patient")


def _context(
    request: Request,
    access: Access,
    principal: Principal | None,
    request_id: str,
    purpose: str | None = None,
) -> RequestContext:
    address = request.client.host if request.client else None
    if principal is None:
        return RequestContext(
            request_id,
            client_id=UNAUTHENTICATED,
            role="unknown",
            channel=access.context_channel,
            source_address=address,
        )
    # Only FHIR routes carry SMART grants and a patient compartment to the store's policy hooks.
    scoped = access.scoped
    confined = (
        (principal.patient_id,) if scoped and principal.role == "patient" and principal.patient_id else ()
    )
    return RequestContext(
        request_id,
        client_id=principal.client_id,
        role=principal.role,
        channel=access.context_channel,
        source_address=address,
        patient_ids=confined,
        grants=tuple(str(s) for s in principal.scopes) if scoped else (),
        purpose_of_use=purpose,
    )


async def authenticate(request: Request, access: Access) -> Caller:
    """The caller of this request, or a 401/403 already in the audit trail (see module docstring)."""
    runtime = runtime_of(request)
    request_id = str(request.scope.get(REQUEST_ID_KEY) or uuid.uuid4().hex)
    principal: Principal | None = None
    try:
        principal = AccessGuard(runtime.tokens).authenticate(request.headers.get("authorization"))
        _authorize(request, access, principal)
        purpose = purpose_for(principal.role, request.headers.get(PURPOSE_HEADER))
    except CarebridgeError as exc:
        subtype = access.audit_as or _AUDIT_INTERACTION.get(
            interaction_of(request.method, _route_path(request)), "transaction"
        )
        denied = _context(request, access, principal, request_id)
        await run_in_threadpool(runtime.audit.record_denial, denied, subtype, reason=exc.message)
        setattr(request.state, AUDITED_STATE, True)
        raise
    caller = Caller(principal, _context(request, access, principal, request_id, purpose))
    setattr(request.state, CONTEXT_STATE, caller.context)
    return caller


def requires(access: Access) -> Callable[[Request], Awaitable[Caller]]:
    """The FastAPI dependency of routes that need ``access``."""

    async def dependency(request: Request) -> Caller:
        return await authenticate(request, access)

    dependency.__name__ = f"{access.name}_caller"
    return dependency


async def fhir_context(request: Request) -> RequestContext:
    """The store context of a FHIR route's caller (``gateway.http.route_params.RestContext``)."""
    return (await authenticate(request, FHIR)).context


CrmCaller = Annotated[Caller, Depends(requires(CRM))]
OfficerCaller = Annotated[Caller, Depends(requires(REIDENTIFY))]
PrivacyCaller = Annotated[Caller, Depends(requires(PRIVACY))]
ReceiptCaller = Annotated[Caller, Depends(requires(PRIVACY_RECEIPT))]
