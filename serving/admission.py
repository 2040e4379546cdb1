"""Admission control of batch requests: a few in flight per worker, the rest wait briefly and are then refused.

A batch can cost a worker a second of CPU; without a bound, four callers sending them at once queue every
ordinary request behind their work. With a slot per batch, a heavy caller waits for itself (or gets 429 with
Retry-After and slows down) while single-user requests go straight through. A batch's scoring and rendering
run on threads of their own, as many as there are slots: on the one scoring thread of Services.compute,
single-user requests would queue behind whole batches (onnxruntime and FAISS release the GIL, so the two
share the cores instead).

One limiter per application (so per worker process and its event loop), made on first use: asyncio primitives
belong to the loop that first waits on them.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from serving import metrics
from serving.errors import ApiError

BUSY_CODE = "batch_capacity_exceeded"
T = TypeVar("T")


class BatchSlots:
    def __init__(self, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self._semaphore = asyncio.Semaphore(limit)
        # Idle threads cost nothing; they are joined at exit like any executor's.
        self._executor = ThreadPoolExecutor(limit, thread_name_prefix="batch")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """fn(*args) on a batch thread; call it while holding a slot, so that a thread is free."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the `limit` slots for the block; ApiError 429 when none frees up within `wait_s`."""
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self.wait_s):
                await self._semaphore.acquire()
        except TimeoutError:
            metrics.BATCH_REJECTIONS.labels("busy").inc()
            # A slot frees when a running batch ends; retrying sooner than the wait just given up on rarely helps.
            retry_after = max(1, math.ceil(self.wait_s))
            raise ApiError(
                429,
                f"this worker is already serving {self.limit} batch requests and no slot freed up within "
                f"{self.wait_s:g} s: retry after {retry_after} s, or send smaller batches",
                BUSY_CODE,
                {"Retry-After": str(retry_after)},
            ) from None
        metrics.BATCH_SLOT_WAIT.observe(time.perf_counter() - started)
        metrics.BATCHES_IN_FLIGHT.inc()
        try:
            yield
        finally:
            metrics.BATCHES_IN_FLIGHT.dec()
            self._semaphore.release()


async def batch_slots(request: Request) -> BatchSlots:
    """This application's limiter, made from its settings on first use (async: no thread-pool hop)."""
    state = request.app.state
    slots: BatchSlots | None = getattr(state, "batch_slots", None)
    if slots is None:  # no await between the check and the assignment: two requests cannot both make one
        settings = state.services.settings
        slots = state.batch_slots = BatchSlots(settings.batch_concurrency, settings.batch_wait_s)
    return slots


BatchSlotsDep = Annotated[BatchSlots, Depends(batch_slots)]
