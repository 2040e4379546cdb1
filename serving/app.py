"""The FastAPI application: `create_app(settings)` wires the engine holder, the journal, the live histories,
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
from serving.journal import Journal
from serving.live import LiveHistory
from serving.middleware import ServiceMiddleware
from serving.routers import adcopy, admin, events, items, operations, recommendations
from serving.state import EngineHolder, ReloadFailed

log = logging.getLogger("recsys.service")

DESCRIPTION = """
Personalised recommendations from the current bundle (ONNX user encoder + FAISS item index), durable event
intake, hot reload. Every response that a bundle produced names it (`bundle_version`, `X-Bundle-Version`).
Errors are `{"error": {"code", "message", "details", "request_id"}}`.
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Bundle, then journal, then watcher: the bundle's creation time says which journalled events to replay
    into the live histories. Without a usable bundle the process still starts: /readyz answers 503 until the
    watcher loads one that gets promoted, and events are journalled meanwhile."""
    services: Services = app.state.services
    settings = services.settings
    try:
        await services.holder.reload(reason="startup")
    except ReloadFailed as exc:
        log.error("starting without a bundle", extra={"fields": {"error": str(exc)}})
    engine = services.holder.engine
    await asyncio.to_thread(services.journal.start, engine.created_ts if engine else 0.0)
    watcher = asyncio.create_task(services.holder.watch(settings.reload_poll_s), name="bundle-watcher")
    log.info(
        "service ready" if engine else "service up, not ready",
        extra={"fields": {"bundle_version": engine.version if engine else None, "live_users": len(services.live)}},
    )
    try:
        yield
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await asyncio.to_thread(services.journal.stop)  # commits whatever is queued before the process exits
        if services.executor is not None:
            services.executor.shutdown(wait=True)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    live = LiveHistory(settings.live_history_len, settings.live_max_users)
    services = Services(
        settings=settings,
        holder=EngineHolder(settings.bundles_dir, settings.threads, on_swap=lambda e: live.prune(e.created_ts)),
        journal=Journal(settings.journal_file, on_rows=live.apply),
        live=live,
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
    app.add_middleware(
        ServiceMiddleware,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
        access_log=settings.access_log,
    )
    return app
