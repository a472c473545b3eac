"""``GET /fhir/AuditEvent`` and ``GET /fhir/AuditEvent/{id}``: the compliance view of the audit trail.

Why (Circular 46/2018/TT-BYT Art. 8, Law 91/2025, ISO/IEC 27001:2022 A.8.15,
IHE BALP): the compliance officer must be able to ask "who touched patient X,
when, and with what outcome" over the standard FHIR API, and that question is
itself an access to personal data, so it is audited like any other search.

Design decisions:

* **Read-only, by construction.**  The audit trail lives in its own
  hash-chained table (:mod:`audit.schema`), not in the FHIR store, so the
  generic ``/fhir/{type}`` routes cannot reach it (AuditEvent is not a store
  type).  These routes are included *before* the generic ones and answer every
  write, history or vread on AuditEvent with 405 -- after authentication, so an
  attempt to rewrite the trail through the API is itself recorded (a failed
  write, see :mod:`gateway.http.errors`).  Nobody, admin included, has a route
  that changes a row.
* **Authorization** needs ``AuditEvent.s`` (search) / ``AuditEvent.r`` (read)
  in the token *and* the role ceiling: only ``compliance_officer`` has them.
  Authentication (``gateway.http.principal.FHIR``) only checks the FHIR
  channel for paths without a ``{type}``, so the scope check is done here; a
  refusal raises :class:`~common.errors.Forbidden`, which the error handler
  audits as a denial.
* **Audited first, then disclosed.**  The query's own AuditEvent (``rest`` /
  ``search-type`` with the query string as a BALP query entity, the searched
  patient as patient entity) is committed before the search runs.  Paging is
  frozen at the chain position just before the first page's own event
  (``_page_token`` = max seq), because every page request appends a new event
  and would otherwise shift a newest-first page.
* **Stored bytes.**  Entries are the canonical JSON exactly as hashed, spliced
  into the Bundle without re-serialising (what the auditor sees is what
  ``carebridge audit verify`` checks).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Annotated, NoReturn
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Path, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from audit import AuditHook, Target, outcome_for_status, rest_event, search_audit, stored_event
from common import InvalidInput, MethodNotAllowed, NotFound
from fhir_store import RequestContext, now_us, parse_fhir_instant_range
from gateway.auth.scopes import Interaction, parse_scopes, require
from gateway.http import bundle_render as render
from gateway.http import openapi_docs as doc
from gateway.http.capability import declare_external
from gateway.http.interactions import FHIR_ID
from gateway.http.media import negotiate, require_form
from gateway.http.responses import fhir_base, fhir_response, read_form_params, runtime_of
from gateway.http.route_params import RestContext

AUDIT_TYPE = "AuditEvent"
#: Search parameters of ``GET /fhir/AuditEvent`` (https://hl7.org/fhir/R4/auditevent.html#search),
#: with the CapabilityStatement type and documentation of each.
SEARCH_PARAMS: dict[str, tuple[str, str]] = {
    "patient": ("reference", "Patient the event is about (id or Patient/id)"),
    "agent": ("reference", "Client id of the requesting agent"),
    "entity": ("reference", "Resource the event is about (every version): Type/id"),
    "date": ("date", "When the event was recorded; prefixes eq ge gt le lt; may repeat"),
    "action": ("token", "C R U D E"),
    "outcome": ("token", "0 success, 4 minor failure, 8 serious failure, 12 denial"),
    "type": ("token", "rest, 110107 (HL7 import), 110106 (export)"),
    "subtype": ("token", "read, search-type, create, update, delete, hl7-message, ..."),
    "purpose": ("token", "purposeOfEvent code (v3-ActReason), e.g. TREAT"),
}
_CONTROL = frozenset({"_count", "_offset", "_page_token", "_sort", "_format", "_pretty"})
DEFAULT_COUNT = 50
MAX_COUNT = 1000

declare_external(
    AUDIT_TYPE,
    ("read", "search-type"),
    [{"name": name, "type": kind, "documentation": text} for name, (kind, text) in SEARCH_PARAMS.items()],
)

router = APIRouter(prefix=f"/fhir/{AUDIT_TYPE}", tags=["AuditEvent"])
IdParam = Annotated[str, Path(alias="id", description="AuditEvent id")]
Params = Sequence[tuple[str, str]]


@dataclass
class AuditQuery:
    """A parsed ``GET /fhir/AuditEvent`` query (see :func:`parse_audit_query`)."""

    filters: dict[str, str] = field(default_factory=dict)
    since_us: int | None = None
    until_us: int | None = None
    count: int = DEFAULT_COUNT
    offset: int = 0
    max_seq: int | None = None
    newest_first: bool = True


def _int(name: str, value: str, low: int, high: int) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f"{name} must be an integer", location=name) from None
    if not low <= number <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}", location=name)
    return number


def _date(query: AuditQuery, value: str) -> None:
    """Narrow the recorded-time window; ``until`` is exclusive, the parsed range inclusive."""
    prefix = value[:2] if value[:2].isalpha() else "eq"
    text = value[2:] if value[:2].isalpha() else value
    if prefix not in ("eq", "ge", "gt", "le", "lt"):
        raise InvalidInput(f"date prefix '{prefix}' is not supported (eq ge gt le lt)", location="date")
    low, high = parse_fhir_instant_range(text, location="date")
    since = {"eq": low, "ge": low, "gt": high + 1}.get(prefix)
    until = {"eq": high + 1, "le": high + 1, "lt": low}.get(prefix)
    if since is not None:
        query.since_us = since if query.since_us is None else max(query.since_us, since)
    if until is not None:
        query.until_us = until if query.until_us is None else min(query.until_us, until)


def parse_audit_query(params: Params) -> AuditQuery:
    """Validate the parameters: unknown ones are a 400 (a typo must never return the whole trail)."""
    query = AuditQuery()
    seen: set[str] = set()
    for name, value in params:
        if name == "date":
            _date(query, value)
            continue
        if name not in SEARCH_PARAMS and name not in _CONTROL:
            known = ", ".join([*SEARCH_PARAMS, "_count", "_sort"])
            raise InvalidInput(
                f"unknown AuditEvent search parameter '{name}' (known: {known})", location=name
            )
        if name in seen:
            raise InvalidInput(f"'{name}' may be given only once", location=name)
        seen.add(name)
        if name == "_count":
            query.count = _int(name, value, 0, MAX_COUNT)
        elif name == "_offset":
            query.offset = _int(name, value, 0, 10**9)
        elif name == "_page_token":
            query.max_seq = _int(name, value, 0, 2**62)
        elif name == "_sort":
            if value not in ("date", "-date", "_lastUpdated", "-_lastUpdated"):
                raise InvalidInput("AuditEvent can be sorted by date or -date only", location="_sort")
            query.newest_first = value.startswith("-")
        elif name in SEARCH_PARAMS:
            if not value:
                raise InvalidInput(f"'{name}' needs a value", location=name)
            # token params accept system|code; the index holds the code
            query.filters[name] = value.rpartition("|")[2] if SEARCH_PARAMS[name][0] == "token" else value
    return query


def _hook(request: Request) -> AuditHook:
    hook = runtime_of(request).audit
    if not isinstance(hook, AuditHook):
        raise NotFound("the audit trail is not available in this process", location=AUDIT_TYPE)
    return hook


def _authorize(context: RequestContext, interaction: Interaction) -> None:
    """Token scope AND role ceiling must allow it: only compliance_officer has ``AuditEvent.rs``."""
    require(parse_scopes(" ".join(context.grants)), context.role, AUDIT_TYPE, interaction)


def _url(base: str, params: Params) -> str:
    text = urlencode(list(params))
    return f"{base}/{AUDIT_TYPE}?{text}" if text else f"{base}/{AUDIT_TYPE}"


def _entry_id(content: bytes) -> str:
    return str(orjson.loads(content)["id"])


def audit_search_bundle(
    hook: AuditHook, context: RequestContext, base: str, params: Params, query_text: str
) -> bytes:
    """Record the query, then answer it from the frozen chain prefix (blocking: run in a thread)."""
    query = parse_audit_query(params)
    patient = query.filters.get("patient")
    event = rest_event(
        context,
        "search-type",
        recorded_us=now_us(),
        patient_ids=[patient.removeprefix("Patient/")] if patient else [],
        query=f"{AUDIT_TYPE}?{query_text}" if query_text else AUDIT_TYPE,
    )
    own_seq = hook.append([event])
    max_seq = query.max_seq if query.max_seq is not None else own_seq - 1
    with hook.engine.connect() as conn:
        page, total = search_audit(
            conn,
            **query.filters,
            since_us=query.since_us,
            until_us=query.until_us,
            count=query.count,
            offset=query.offset,
            newest_first=query.newest_first,
            max_seq=max_seq,
        )
    kept = [(k, v) for k, v in params if k not in ("_count", "_offset", "_page_token")]
    paging = [("_count", str(query.count)), ("_page_token", str(max_seq))]
    links = [("self", _url(base, params))]
    if query.count > 0:
        if query.offset + len(page) < total:
            links.append(("next", _url(base, [*kept, *paging, ("_offset", str(query.offset + query.count))])))
        if query.offset > 0:
            previous = max(0, query.offset - query.count)
            links.append(("previous", _url(base, [*kept, *paging, ("_offset", str(previous))])))
    entries = [
        render.entry(f"{base}/{AUDIT_TYPE}/{_entry_id(content)}", content, search_mode="match")
        for content in page
    ]
    return render.assemble("searchset", entries, total=total, links=links)


def audit_read(hook: AuditHook, context: RequestContext, event_id: str) -> bytes:
    """One stored AuditEvent; the read is recorded (a miss as a 404 failure) before answering."""
    with hook.engine.connect() as conn:
        content = stored_event(conn, event_id)
    target = Target(AUDIT_TYPE, event_id)
    status = 200 if content is not None else 404
    hook.append(
        [
            rest_event(
                context,
                "read",
                recorded_us=now_us(),
                targets=[target],
                outcome=outcome_for_status(status),
                outcome_desc=None if status == 200 else "HTTP 404",
            )
        ]
    )
    if content is None:
        raise NotFound(f"{AUDIT_TYPE}/{event_id} is not known", location="id")
    return content


_SEARCH_DOC = doc.responses({200: ("searchset Bundle of AuditEvents", doc.BUNDLE)}, (400, 404))
_SEARCH_PARAMS_DOC = [
    *(
        {"name": name, "in": "query", "required": False, "schema": {"type": "string"}, "description": text}
        for name, (_kind, text) in SEARCH_PARAMS.items()
    ),
    *(p for p in doc.SEARCH_PARAMS if p["name"] in ("_count", "_offset", "_page_token", "_sort", "_format")),
]


@router.get(
    "",
    summary="Search the audit trail (compliance_officer)",
    response_class=Response,
    responses=_SEARCH_DOC,
    openapi_extra=doc.extra(_SEARCH_PARAMS_DOC),
)
def search(request: Request, context: RestContext) -> Response:
    negotiate(request.headers, request.query_params)
    _authorize(context, "s")
    hook = _hook(request)
    params = request.query_params.multi_items()
    body = audit_search_bundle(hook, context, fhir_base(request), params, request.url.query)
    return fhir_response(body)


@router.post(
    "/_search",
    summary="Search the audit trail (form body)",
    response_class=Response,
    responses=_SEARCH_DOC,
    openapi_extra=doc.extra([doc.FORMAT], doc.FORM_BODY),
)
async def search_post(request: Request, context: RestContext) -> Response:
    negotiate(request.headers, request.query_params)
    _authorize(context, "s")
    require_form(request.headers)
    params = await read_form_params(request)
    hook = _hook(request)
    body = await run_in_threadpool(
        audit_search_bundle, hook, context, fhir_base(request), params, urlencode(params)
    )
    return fhir_response(body)


def _refuse(what: str) -> NoReturn:
    raise MethodNotAllowed(
        f"{what} is not supported for {AUDIT_TYPE}: the audit trail is append-only and written "
        "only by carebridge itself",
        location=AUDIT_TYPE,
    )


@router.get("/_history", include_in_schema=False)
def type_history(request: Request, context: RestContext) -> Response:
    _refuse("history-type")


@router.get("/{id}/_history", include_in_schema=False)
def instance_history(request: Request, resource_id: IdParam, context: RestContext) -> Response:
    _refuse("history-instance")


@router.get("/{id}/_history/{vid}", include_in_schema=False)
def vread(request: Request, resource_id: IdParam, vid: str, context: RestContext) -> Response:
    _refuse("vread")


@router.get(
    "/{id}",
    summary="Read one AuditEvent (compliance_officer)",
    response_class=Response,
    responses=doc.responses({200: ("The AuditEvent", doc.RESOURCE)}, (404,)),
    openapi_extra=doc.extra([doc.FORMAT]),
)
def read(request: Request, resource_id: IdParam, context: RestContext) -> Response:
    negotiate(request.headers, request.query_params)
    _authorize(context, "r")
    if not FHIR_ID.match(resource_id):
        raise NotFound(f"'{resource_id}' is not a valid {AUDIT_TYPE} id", location="id")
    return fhir_response(audit_read(_hook(request), context, resource_id))


@router.api_route("", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
def type_write(request: Request, context: RestContext) -> Response:
    kind = {"POST": "create", "PUT": "update", "DELETE": "delete", "PATCH": "patch"}[request.method]
    _refuse(f"{kind} (conditional)" if request.method != "POST" else kind)


@router.api_route("/{id}", methods=["POST", "PUT", "DELETE", "PATCH"], include_in_schema=False)
def instance_write(request: Request, resource_id: IdParam, context: RestContext) -> Response:
    kind = {"POST": "create", "PUT": "update", "DELETE": "delete", "PATCH": "patch"}[request.method]
    _refuse(kind)
