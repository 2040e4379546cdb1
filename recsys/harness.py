"""The real server as a child process (`recsys serve` on 127.0.0.1, a free port), for tests and the benchmark.

The child runs through a small launcher that reports at exit whether torch was ever imported, so every test
that starts a server also checks the rule that the online side never imports torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from recsys.settings import REPO_ROOT

HOST = "127.0.0.1"
TORCH_MARKER = "TORCH_IMPORTED="

# uvicorn re-raises SIGTERM after its graceful shutdown; the handler turns that into a normal exit, so the
# atexit report runs (a process killed by the default SIGTERM action runs no Python at all).
_LAUNCHER = f"""
import atexit, signal, sys
atexit.register(lambda: print("{TORCH_MARKER}" + str("torch" in sys.modules), flush=True))
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
from recsys.cli import app
app(["serve", *sys.argv[1:]], standalone_mode=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_until_ready(url: str, process: subprocess.Popen, timeout_s: float, log: Callable[[], str] = str) -> None:
    """Poll `url` until it answers 200; RuntimeError with the tail of `log()` if the process exits or time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log()[-4000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready after {timeout_s} s:\n{log()[-4000:]}")


def stop_process(process: subprocess.Popen, timeout_s: float = 20.0) -> int:
    """SIGTERM (a graceful shutdown), then SIGKILL if it does not exit in time; the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class ServerProcess:
    """`with ServerProcess(bundles, work) as server: server.url` — started, ready, stopped with SIGTERM."""

    def __init__(
        self,
        bundles: str | Path,
        work: str | Path,
        env: dict[str, str] | None = None,
        ready_path: str = "/readyz",
        workers: int = 1,
        journal: str | Path | None = None,
        python: str | Path | None = None,
    ) -> None:
        self.bundles = Path(bundles)
        self.work = Path(work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.journal = Path(journal) if journal else self.work / "journal.sqlite3"
        self.extra_env = env or {}
        self.ready_path = ready_path
        self.workers = workers
        # The interpreter of the child: another virtualenv's (e.g. the serving-only install) or this one's.
        self.python = str(python or sys.executable)
        self.port = 0
        self.process: subprocess.Popen | None = None
        self.log_path = self.work / "server.log"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> ServerProcess:
        self.port = free_port()
        env = {
            **os.environ,
            "RECSYS_WORK_DIR": str(self.work),
            "RECSYS_JOURNAL_PATH": str(self.journal),
            **self.extra_env,
        }
        command = [self.python, "-c", _LAUNCHER, "--bundles", str(self.bundles), "--port", str(self.port)]
        command += ["--workers", str(self.workers)]
        # A file, not a pipe: a chatty server must never block on a pipe nobody reads.
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        assert self.process is not None
        wait_until_ready(self.url + self.ready_path, self.process, timeout_s, self.log)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        return None if self.process is None else stop_process(self.process, timeout_s)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; what is durable is what was committed."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def torch_imported(self) -> bool | None:
        """What the launcher printed at a clean exit (None when it was killed before it could)."""
        for line in reversed(self.log().splitlines()):
            if line.startswith(TORCH_MARKER):
                return line[len(TORCH_MARKER) :] == "True"
        return None

    def log_records(self) -> list[dict]:
        records = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                with contextlib.suppress(json.JSONDecodeError):
                    records.append(json.loads(line))
        return records

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class RedisServer:
    """`redis-server` on 127.0.0.1 with the durability the shared event store needs, its files in `directory`.

    The settings are the ones an operator runs with (README, "Several replicas"): the append-only file with an
    fsync before every reply, no RDB snapshots (the AOF is the copy), loopback only.
    """

    def __init__(self, directory: str | Path, port: int | None = None, fsync: str = "always") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.fsync = fsync
        self.process: subprocess.Popen | None = None
        self.log_path = self.directory / "redis.log"

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            "redis-server",
            "--port", str(self.port),
            "--bind", HOST,
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", self.fsync,
            "--save", "",
            "--logfile", str(self.log_path),
        ]  # fmt: skip

    def start(self, timeout_s: float = 20.0) -> RedisServer:
        self.process = subprocess.Popen(self.command(), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}:\n{self.log()[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection((HOST, self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):  # not -LOADING: the AOF is replayed
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server not ready after {timeout_s} s:\n{self.log()[-2000:]}")

    def stop(self) -> int | None:
        return None if self.process is None else stop_process(self.process)

    def kill(self) -> None:
        """SIGKILL: what survives is what the append-only file holds."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
