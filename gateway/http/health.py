"""Liveness, readiness and Prometheus metrics (DESIGN.md §2: ``/healthz``, ``/readyz``, ``/metrics``).

``/healthz`` answers as long as the process serves HTTP; ``/readyz`` also
checks that the database answers and is migrated to the head revision the
code expects, so a load balancer never routes to an instance whose schema is
behind.  Metrics are labelled by route *template* (``/fhir/{type}/{id}``),
never by concrete path, which would carry resource ids and explode the
series count (https://prometheus.io/docs/practices/naming/#labels).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from fhir_store import RequestContext
from gateway.metrics import ops_collector
from gateway.production import metrics_allowed
from gateway.readiness import check as readiness_check
from gateway.runtime import Runtime

router = APIRouter(include_in_schema=True, tags=["operations"])

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class HttpMetrics:
    """Per-app registry, so several apps in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "carebridge_http_requests",
            "HTTP requests by method, route template and status",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "carebridge_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            ("method", "route"),
            buckets=_BUCKETS,
            registry=self.registry,
        )

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)


_HEALTH_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"application/json": {"schema": {"type": "object"}}}},
}
_READY_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {"content": {"application/json": {"schema": {"type": "object"}}}},
    503: {"content": {"application/json": {"schema": {"type": "object"}}}},
}


@router.get("/healthz", response_class=Response, responses=_HEALTH_RESPONSES, summary="Liveness")
async def healthz() -> Response:
    return JSONResponse({"status": "ok"})


@router.get("/readyz", response_class=Response, responses=_READY_RESPONSES, summary="Readiness")
async def readyz(request: Request) -> Response:
    """Ready to read, write and keep up (gateway.readiness); 503 names every failing check."""
    runtime: Runtime = request.app.state.runtime
    result = await run_in_threadpool(
        readiness_check, runtime.store, runtime.settings, runtime.crm.dispatcher, runtime.health_engine
    )
    return JSONResponse(result.body(), status_code=200 if result.ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        401: {"description": "Production mode: not loopback and no valid CAREBRIDGE_METRICS_TOKEN bearer"},
        403: {"description": "Production mode: not loopback and no metrics token is configured"},
    },
    summary="Prometheus metrics",
)
async def metrics(request: Request) -> Response:
    runtime: Runtime = request.app.state.runtime
    peer = request.client.host if request.client else None
    headers = dict(request.scope.get("headers", ()))
    if not metrics_allowed(runtime.settings, peer, headers):
        # client and subscription ids are in the series: outside callers need the token (issue #16)
        from gateway.http.request_context import REQUEST_ID_KEY  # import cycle: it imports HttpMetrics

        context = RequestContext(
            str(request.scope.get(REQUEST_ID_KEY) or ""),
            client_id="unauthenticated",
            role="unknown",
            channel="rest",
            source_address=peer,
        )
        await run_in_threadpool(
            runtime.audit.record_denial, context, "metrics", reason="metrics access denied"
        )
        if runtime.settings.metrics_token.get_secret_value():
            return JSONResponse(
                {"error": "a bearer token is required"},
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return JSONResponse({"error": "metrics are served to loopback only"}, status_code=403)
    # HTTP series plus the HL7/journal/audit/CRM collector (gateway.metrics), which queries the
    # database at scrape time: rendered in a worker thread so a slow query never blocks the loop.
    registry: CollectorRegistry = request.app.state.metrics.registry
    ops_collector(request.app.state, registry, request.app.state.runtime)
    body = await run_in_threadpool(generate_latest, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
