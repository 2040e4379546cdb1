"""The engine holder: which bundle serves, atomic swaps, and the watcher that reloads when CURRENT changes.

No request ever sees two bundles: a handler takes `holder.engine` once and uses that object for the whole
request; a reload builds and checks a complete new engine off the event loop, then replaces the reference
in one assignment. In-flight requests finish on the old engine, which is freed when the last one drops it.
A bundle that fails (checksums, loading, the smoke query) never becomes `holder.engine`: the old one serves
on, and the failure is logged and counted (recsys_bundle_reloads{result="failed"}).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from recsys import bundle
from recsys.bundle.reader import BundleRecommender
from serving import metrics

log = logging.getLogger("recsys.bundle")

_ABSOLUTE_PATH = re.compile(r"(?:/[^\s/:'\",()]+)+/([^\s/:'\",()]+)")


def public_message(exc: BaseException, root: Path) -> str:
    """The failure as a client may see it: bundle versions and file names, never a server path."""
    if isinstance(exc, bundle.BundleError):
        text = str(exc)
    else:  # a library's own message (onnxruntime, faiss) may quote anything; keep only its kind
        text = f"{type(exc).__name__} while loading the bundle (details in the server log)"
    for prefix in sorted({str(root.resolve()), str(root.absolute()), str(root)}, key=len, reverse=True):
        text = text.replace(prefix + os.sep, "").replace(prefix, "<bundles>")
    return _ABSOLUTE_PATH.sub(r"\1", text)


class ReloadFailed(Exception):
    """A bundle was refused; the message is safe to return to a client."""


@dataclass(frozen=True)
class ReloadOutcome:
    status: str  # "reloaded" or "unchanged"
    version: str
    previous_version: str | None


class EngineHolder:
    def __init__(
        self, root: str | Path, threads: int = 1, on_swap: Callable[[BundleRecommender], None] | None = None
    ) -> None:
        self.root = Path(root)
        self.threads = threads
        self.on_swap = on_swap  # runs in a worker thread after a swap (the live histories drop older events)
        self.engine: BundleRecommender | None = None
        self.last_error: str | None = None
        self._lock = asyncio.Lock()
        self._refused: tuple[str, float] | None = None  # (version, CURRENT mtime) the watcher will not retry

    def _pointer(self) -> tuple[str | None, float]:
        path = self.root / bundle.CURRENT
        try:
            return bundle.current_version(self.root), path.stat().st_mtime
        except OSError:
            return None, 0.0

    def _load(self, version: str) -> BundleRecommender:
        """Runs in a worker thread: checksums, ONNX + FAISS load, smoke query. Raises on any failure."""
        if not version or "/" in version or version.startswith("."):
            raise bundle.BundleError(f"CURRENT names {version!r}, which is not a bundle version")
        engine = BundleRecommender(self.root / version, threads=self.threads)
        engine.smoke_check()
        return engine

    async def reload(self, force: bool = False, reason: str = "admin") -> ReloadOutcome:
        """Load the bundle CURRENT names and swap it in; ReloadFailed (old engine kept) when it is refused."""
        async with self._lock:  # one load at a time: the watcher and an admin call never race
            version, mtime = self._pointer()
            previous = self.engine.version if self.engine else None
            if version is None:
                raise self._refuse(None, 0.0, "no bundle is promoted (CURRENT is missing or empty)", reason)
            if not force and version == previous:
                return ReloadOutcome("unchanged", version, previous)
            started = time.perf_counter()
            try:
                engine = await asyncio.to_thread(self._load, version)
            except Exception as exc:  # noqa: BLE001 - whatever the cause, this bundle stays out
                log.error(
                    "bundle refused",
                    exc_info=not isinstance(exc, bundle.BundleError),
                    extra={"fields": {"version": version, "reason": reason, "error": str(exc), "serving": previous}},
                )
                raise self._refuse(version, mtime, public_message(exc, self.root), reason) from None
            self.engine = engine  # the swap
            self.last_error = None
            self._refused = None
            seconds = time.perf_counter() - started
            metrics.RELOADS.labels("ok").inc()
            metrics.RELOAD_SECONDS.observe(seconds)
            metrics.set_bundle(version, previous)
            if self.on_swap is not None:
                try:
                    await asyncio.to_thread(self.on_swap, engine)
                except Exception:  # noqa: BLE001 - housekeeping; the new bundle serves regardless
                    log.exception("after-swap hook failed")
            log.info(
                "bundle loaded",
                extra={
                    "fields": {
                        "version": version,
                        "previous": previous,
                        "reason": reason,
                        "items": engine.n_items,
                        "load_s": round(seconds, 3),
                    }
                },
            )
            return ReloadOutcome("reloaded", version, previous)

    def _refuse(self, version: str | None, mtime: float, message: str, reason: str) -> ReloadFailed:
        metrics.RELOADS.labels("failed").inc()
        self._refused = (version or "", mtime)
        serving = f"; still serving {self.engine.version}" if self.engine else "; no bundle is serving"
        self.last_error = message
        if version is None:
            log.error("bundle reload failed", extra={"fields": {"reason": reason, "error": message}})
        return ReloadFailed(message + serving)

    async def watch(self, interval_s: float) -> None:
        """Poll CURRENT (one small file read); load when it names a version not served and not yet refused."""
        while True:
            await asyncio.sleep(interval_s)
            version, mtime = self._pointer()
            if version is None or (self.engine is not None and version == self.engine.version):
                continue
            if self._refused == (version, mtime):
                continue  # a refused bundle is not re-verified every poll; a new promote (new mtime) retries
            try:
                await self.reload(reason="watch")
            except ReloadFailed:
                pass
            except Exception:  # noqa: BLE001 - the watcher must survive anything
                log.exception("bundle watcher error")
