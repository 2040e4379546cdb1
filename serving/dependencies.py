"""What route handlers get injected: the engine serving now, the event store, the admin check.

The dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in its thread pool, and
those hops cost more than the whole engine call (~0.2 ms each, measured).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader

from recsys.bundle.reader import BundleRecommender
from recsys.settings import Settings
from serving.errors import ApiError
from serving.event_store import EventStore
from serving.state import EngineHolder

T = TypeVar("T")


@dataclass
class Services:
    settings: Settings
    holder: EngineHolder
    store: EventStore  # acknowledged events and each user's live history (embedded journal or shared Redis)
    # One scoring thread per worker: onnxruntime and FAISS release the GIL, so while it scores one request the
    # event loop can parse, validate and serialise the others on the other core. It costs a thread hop per
    # request (~0.1 ms). One thread, not a pool: intra-op threads stay at 1, requests never fight for cores.
    executor: ThreadPoolExecutor | None = None

    async def compute(self, fn: Callable[..., T], *args: Any) -> T:
        """Run an engine call on the scoring thread (or inline when engine_thread is off)."""
        if self.executor is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)


async def services(request: Request) -> Services:
    return request.app.state.services


async def current_engine(request: Request) -> BundleRecommender:
    """The engine for this whole request (taken once: a reload mid-request cannot mix two bundles).

    Its version is put in the request state, and the middleware adds it to the response as X-Bundle-Version.
    """
    engine = request.app.state.services.holder.engine
    if engine is None:
        raise ApiError(503, "no verified bundle is loaded yet (see /readyz)", "not_ready", {"Retry-After": "1"})
    request.state.bundle_version = engine.version
    return engine


Engine = Annotated[BundleRecommender, Depends(current_engine)]
ServicesDep = Annotated[Services, Depends(services)]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the admin key (RECSYS_API_KEY)")


async def require_admin(request: Request, key: Annotated[str | None, Security(_api_key_header)]) -> None:
    """401 without a key, 403 with a wrong one (or when the server has none configured)."""
    expected = request.app.state.services.settings.api_key
    if not key:
        raise ApiError(
            401, "this route needs the admin key in the X-API-Key header", headers={"WWW-Authenticate": "ApiKey"}
        )
    if expected is None or not expected.get_secret_value():
        raise ApiError(403, "admin routes are disabled: the server has no admin key configured (RECSYS_API_KEY)")
    # Constant-time: the comparison takes as long whatever prefix of the key is right.
    if not hmac.compare_digest(key.encode(), expected.get_secret_value().encode()):
        raise ApiError(403, "wrong admin key")
