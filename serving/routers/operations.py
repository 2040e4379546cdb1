"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

import contextlib

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from serving import metrics
from serving.dependencies import ServicesDep
from serving.schemas import Health, Readiness

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="The process is up")
async def healthz() -> Health:
    return Health()


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "No verified bundle is loaded yet"}},
    summary="A verified bundle is loaded and serving (degraded: without the event store)",
)
async def readyz(services: ServicesDep) -> Readiness | JSONResponse:
    engine = services.holder.engine
    health = await services.store.health()
    store = {
        "event_store": health.kind,
        "event_store_reachable": health.reachable,
        "event_store_error": health.detail,
    }
    if engine is None:
        body = Readiness(status="not_ready", last_error=services.holder.last_error, **store)
        return JSONResponse(body.model_dump(), status_code=503)
    return Readiness(
        status="ready" if health.reachable else "degraded",
        **store,
        bundle_version=engine.version,
        bundle_created_at=engine.created_at,
        items=engine.n_items,
        max_len=engine.max_len,
        last_error=services.holder.last_error,
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text"}},
    summary="Prometheus metrics",
)
async def prometheus_metrics(services: ServicesDep) -> Response:
    with contextlib.suppress(Exception):  # a metric read must never fail the scrape
        metrics.JOURNAL_LAG.set(services.store.lag())
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
