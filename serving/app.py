"""The FastAPI application: `create_app(settings)` wires the engine holder, the event store,
the routers, the error handlers and the middleware; `recsys serve` runs it under uvicorn (serving/server.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from fastapi import FastAPI

from recsys.settings import Settings, get_settings
from serving import errors
from serving.dependencies import Services
from serving.event_store import open_event_store
from serving.middleware import ServiceMiddleware
from serving.routers import adcopy, admin, events, items, operations, preview, recommendations
from serving.state import EngineHolder, ReloadFailed

log = logging.getLogger("recsys.service")

DESCRIPTION = """
Personalised recommendations from the current bundle (ONNX user encoder + FAISS item index), durable event
intake, hot reload. Every response that a bundle produced names it (`bundle_version`, `X-Bundle-Version`).
Errors are `{"error": {"code", "message", "details", "request_id"}}`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Bundle, then event store, then watcher: the bundle's ingest watermark says which stored events are live.
    Without a usable bundle the process still starts: /readyz answers 503 until the watcher loads one that gets
    promoted, and events are stored meanwhile."""
    services: Services = app.state.services
    settings = services.settings
    try:
        await services.holder.reload(reason="startup")
    except ReloadFailed as exc:
        log.error("starting without a bundle", extra={"fields": {"error": str(exc)}})
    engine = services.holder.engine
    await services.store.open(engine)
    watcher = asyncio.create_task(services.holder.watch(settings.reload_poll_s), name="bundle-watcher")
    log.info(
        "service ready" if engine else "service up, not ready",
        extra={
            "fields": {
                "bundle_version": engine.version if engine else None,
                "event_store": services.store.kind,
                "live_users": services.store.live_users,
            }
        },
    )
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await services.store.close()
        if services.executor is not None:
            services.executor.shutdown(wait=True)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    store = open_event_store(settings)
    services = Services(
        settings=settings,
        holder=EngineHolder(settings.bundles_dir, settings.threads, on_swap=store.on_swap),
        store=store,
        executor=ThreadPoolExecutor(1, thread_name_prefix="engine") if settings.engine_thread else None,
    )
    app = FastAPI(
        title="genrec recommendation service",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.services = services
    errors.install(app)
    for module in (recommendations, items, adcopy, events, admin, operations):
        app.include_router(module.router)
    if settings.preview:  # a page for people looking at the model; absent (404) unless asked for
        app.include_router(preview.router)
    app.add_middleware(
        ServiceMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        access_log=settings.access_log,
    )
    return app
