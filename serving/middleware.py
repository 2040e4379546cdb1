"""One pure ASGI middleware for every request: request ID, body size limit, metrics, access log, and the
X-Bundle-Version header.

Pure ASGI rather than Starlette's BaseHTTPMiddleware, which wraps every request in extra tasks and streams:
that costs a measurable share of a ~1 ms request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving import metrics
from serving.errors import error_response

log = logging.getLogger("recsys.access")

_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class ServiceMiddleware:
    def __init__(
        self, app: ASGIApp, max_body_bytes: int, body_timeout_s: float = 10.0, access_log: bool = True
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.access_log = access_log
        # Cheap, unique, sortable request IDs: pid + a counter (a uuid4 per request costs more than it says).
        self._prefix = f"{os.getpid():x}-{int(time.time()):x}-"
        self._counter = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state: dict[str, Any] = scope.setdefault("state", {})
        given = _header(scope, b"x-request-id")
        # A client's ID is echoed and logged, and names the journal's audit batch: only a plain token is kept.
        request_id = given if given and _REQUEST_ID.fullmatch(given) else f"{self._prefix}{next(self._counter)}"
        state["request_id"] = request_id
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", state["request_id"].encode("latin-1", "replace")))
                version = state.get("bundle_version")
                if version:
                    headers.append((b"x-bundle-version", version.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            if scope["method"] in _BODY_METHODS:
                receive = await self._limited_body(scope, receive, send_wrapper, state)
                if receive is None:  # answered 413 already
                    return
            await self.app(scope, receive, send_wrapper)
        finally:
            self._observe(scope, status, time.perf_counter() - started, state)

    async def _limited_body(self, scope: Scope, receive: Receive, send: Send, state: dict) -> Receive | None:
        """Read the whole body up to the limit, then replay it; 413 before reading when Content-Length says so.

        Ours rather than FastAPI's `max_body_size`, which answers with plain text instead of this API's JSON
        ErrorResponse. Reading first also covers chunked bodies that declare no length; bodies here are small
        JSON (1 MiB limit by default), so holding one in memory costs nothing that parsing it would not.
        """
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            await self._too_large(scope, send, state)
            return None
        chunks: list[bytes] = []
        size = 0
        try:
            # A body that never finishes would hold its connection (and a worker's memory) for ever.
            async with asyncio.timeout(self.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return _replay([message], receive)
                    body = message.get("body", b"")
                    size += len(body)
                    if size > self.max_body_bytes:
                        await self._too_large(scope, send, state)
                        return None
                    chunks.append(body)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            message = f"the request body did not arrive within {self.body_timeout_s:g} s"
            await error_response(state["request_id"], 408, message, "body_timeout")(scope, _nothing_to_read, send)
            return None
        return _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}], receive)

    async def _too_large(self, scope: Scope, send: Send, state: dict) -> None:
        message = f"the body is larger than the limit of {self.max_body_bytes} bytes"
        await error_response(state["request_id"], 413, message)(scope, _nothing_to_read, send)

    def _observe(self, scope: Scope, status: int, seconds: float, state: dict) -> None:
        route = scope.get("route")
        # The route template, not the path: /v1/users/{user_id}/... is one series, not one per user.
        template = getattr(route, "path", None) or "unmatched"
        method = scope["method"]
        metrics.REQUESTS.labels(template, method, str(status)).inc()
        metrics.LATENCY.labels(template, method).observe(seconds)
        if self.access_log:
            log.info(
                "request",
                extra={
                    "fields": {
                        "request_id": state.get("request_id"),
                        "method": method,
                        "route": template,
                        "status": status,
                        "ms": round(seconds * 1000, 3),
                        "bundle_version": state.get("bundle_version"),
                    }
                },
            )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def _replay(pending: list[Message], receive: Receive) -> Receive:
    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()  # after the body: wait for the disconnect, as Starlette expects

    return replayed


async def _nothing_to_read() -> Message:  # a Response never reads the request
    return {"type": "http.disconnect"}
