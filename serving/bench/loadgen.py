"""A closed-loop HTTP/1.1 load generator on asyncio streams, for `recsys benchmark serving`.

Why not httpx or aiohttp: on a 2-core machine the client shares the CPU with the server, and a client that
spends ~0.3 ms of Python per request (httpx) both inflates the latency it reports and caps the throughput it
can drive. This one writes a pre-built GET and parses only the status line and Content-Length (~20 µs per
request), on keep-alive connections, one per simulated client. It understands exactly what uvicorn sends
(Content-Length bodies; chunked bodies are read too) and counts anything else as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


@dataclass
class LoadResult:
    concurrency: int
    duration_s: float
    requests: int = 0
    errors: int = 0
    latencies_s: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def percentile_ms(self, q: float) -> float | None:
        if not self.latencies_s:
            return None
        return float(np.percentile(np.asarray(self.latencies_s), q) * 1000.0)

    def summary(self) -> dict:
        return {
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "errors": self.errors,
            "rps": round(self.rps, 1),
            "p50_ms": _round(self.percentile_ms(50)),
            "p99_ms": _round(self.percentile_ms(99)),
            "p999_ms": _round(self.percentile_ms(99.9)),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, keep_alive) of one response; its body is read and dropped."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed")
    status = int(status_line.split(b" ", 2)[1])
    length = None
    chunked = False
    keep_alive = True
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"transfer-encoding" and b"chunked" in value.lower():
            chunked = True
        elif name == b"connection" and b"close" in value.lower():
            keep_alive = False
    if chunked:
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif length:
        await reader.readexactly(length)
    return status, keep_alive


async def _client(
    host: str, port: int, requests: Sequence[bytes], offset: int, deadline: float, result: LoadResult, record: bool
) -> None:
    reader = writer = None
    i = offset
    while time.perf_counter() < deadline:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            request = requests[i % len(requests)]
            i += 1
            started = time.perf_counter()
            writer.write(request)
            status, keep_alive = await _read_response(reader)
            elapsed = time.perf_counter() - started
            if status != 200:
                result.errors += 1
                if len(result.error_samples) < 5:
                    result.error_samples.append(f"HTTP {status}")
            result.requests += 1
            if record:
                result.latencies_s.append(elapsed)
            if not keep_alive:
                writer.close()
                writer = None
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
            result.errors += 1
            result.requests += 1
            if len(result.error_samples) < 5:
                result.error_samples.append(f"{type(exc).__name__}: {exc}")
            if writer is not None:
                writer.close()
            writer = None
            await asyncio.sleep(0.01)
    if writer is not None:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def _drive(host: str, port: int, paths: Sequence[str], concurrency: int, duration_s: float, record: bool):
    requests = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode() for p in paths]
    result = LoadResult(concurrency, duration_s)
    started = time.perf_counter()
    deadline = started + duration_s
    step = max(1, len(requests) // max(1, concurrency))
    await asyncio.gather(
        *(_client(host, port, requests, c * step, deadline, result, record) for c in range(concurrency))
    )
    result.duration_s = time.perf_counter() - started
    return result


def run_load(
    host: str, port: int, paths: Sequence[str], concurrency: int, duration_s: float, record: bool = True
) -> LoadResult:
    """`concurrency` keep-alive clients, each sending the next request when the previous answer is in, for
    `duration_s` seconds, cycling through `paths`. Loopback only: the benchmark never leaves the machine."""
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # plain asyncio works, a little slower
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_drive(host, port, paths, concurrency, duration_s, record))
