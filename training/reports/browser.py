"""Render an HTML file in headless Chromium and report what a reader would see: charts, errors, a screenshot.

Talks the Chrome DevTools Protocol over `--remote-debugging-pipe` (file descriptors 3 and 4, messages ended
by a NUL byte), so it needs nothing but the standard library and Debian's `chromium` package: no driver, no
websocket client, no network port. Used by the report's browser test and `recsys report behaviour
--screenshot`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
)
# What the page shows, measured in the page: every figure.chart, whether its SVG is rendered and visible.
INSPECT = """(() => {
  const charts = [...document.querySelectorAll('figure.chart')].map(f => {
    const svg = f.querySelector('svg');
    const box = svg ? svg.getBoundingClientRect() : {width: 0, height: 0};
    const style = svg ? getComputedStyle(svg) : null;
    let hidden = false;
    for (let n = f; n; n = n.parentElement) {
      const s = getComputedStyle(n);
      if (s.display === 'none' || s.visibility === 'hidden' || parseFloat(s.opacity) === 0) hidden = true;
    }
    return {
      id: f.id,
      title: (f.querySelector('h3') || {}).textContent || '',
      takeaway: (f.querySelector('.takeaway') || {}).textContent || '',
      width: box.width, height: box.height,
      visible: !!svg && !hidden && style.visibility === 'visible',
      marks: svg ? svg.querySelectorAll('rect,circle,polyline,path,line').length : 0,
      texts: svg ? svg.querySelectorAll('text').length : 0,
    };
  });
  const external = [...document.querySelectorAll('[src],link[href]')].map(e => e.src || e.href)
    .filter(u => u && !u.startsWith('data:'));
  return JSON.stringify({title: document.title, charts, external, height: document.documentElement.scrollHeight});
})()"""


@dataclass
class Rendered:
    title: str
    charts: list[dict[str, Any]]
    errors: list[str] = field(default_factory=list)  # console errors, uncaught exceptions, failed loads
    external: list[str] = field(default_factory=list)  # resources the page would fetch (a report needs none)
    screenshot: Path | None = None
    height: int = 0


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class _Pipe:
    """The DevTools protocol over two pipes: JSON messages, each ended by a NUL byte."""

    def __init__(self, process: subprocess.Popen, to_browser: int, from_browser: int):
        self.process, self.to_browser, self.from_browser = process, to_browser, from_browser
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self.from_browser], [], [], left)
            if ready:
                chunk = os.read(self.from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe (exit {self.process.poll()})")
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30.0):
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30.0) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        deadline = time.monotonic() + timeout
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event


def _errors(events: list[dict[str, Any]]) -> list[str]:
    found = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in params["args"]))
        elif method == "Runtime.exceptionThrown":
            found.append("exception: " + params.get("exceptionDetails", {}).get("text", ""))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            found.append("log: " + params["entry"].get("text", ""))
    return found


def render(
    html: str | Path, screenshot: str | Path | None = None, width: int = 1280, timeout: float = 60.0
) -> Rendered:
    """Load the file in headless Chromium, inspect the charts, collect errors, save a full-page PNG."""
    chromium = find_chromium()
    if chromium is None:
        raise RuntimeError("Chromium is not installed (Debian: apt-get install -y chromium)")
    url = Path(html).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="recsys-chromium-") as profile:
        to_r, to_w = os.pipe()  # we write, Chromium reads on fd 3
        from_r, from_w = os.pipe()  # Chromium writes on fd 4, we read
        # fd 3 / fd 4 in the child: a shell moves the pipe ends there, then becomes Chromium
        command = ["/bin/sh", "-c", 'exec 3<&0 4>&1 0</dev/null 1>/dev/null; exec "$@"', "sh", chromium]
        command += [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},900", "about:blank"]
        process = subprocess.Popen(command, stdin=to_r, stdout=from_w, stderr=subprocess.DEVNULL, close_fds=True)
        os.close(to_r)
        os.close(from_w)
        pipe = _Pipe(process, to_w, from_r)
        try:
            target = pipe.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                pipe.call(f"{domain}.enable", session=session)
            metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
            pipe.call("Emulation.setDeviceMetricsOverride", metrics, session=session)
            pipe.call("Page.navigate", {"url": url}, session=session, timeout=timeout)
            pipe.wait_for("Page.loadEventFired", timeout=timeout)
            page = json.loads(
                pipe.call("Runtime.evaluate", {"expression": INSPECT, "returnByValue": True}, session=session)[
                    "result"
                ]["value"]
            )
            shot = None
            if screenshot is not None:
                height = min(int(page["height"]), 16_000)
                pipe.call("Emulation.setDeviceMetricsOverride", {**metrics, "height": height}, session=session)
                data = pipe.call("Page.captureScreenshot", {"format": "png"}, session=session, timeout=timeout)["data"]
                shot = Path(screenshot)
                shot.parent.mkdir(parents=True, exist_ok=True)
                shot.write_bytes(base64.b64decode(data))
            errors = _errors(pipe.events)
            with contextlib.suppress(RuntimeError, TimeoutError):  # it is closing anyway
                pipe.call("Browser.close", timeout=5)
        finally:
            os.close(to_w)
            os.close(from_r)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return Rendered(page["title"], page["charts"], errors, page["external"], shot, int(page["height"]))
