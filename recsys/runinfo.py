"""What every benchmark result records about its run: the machine, the time, and where the JSON goes.

Results land under the work directory by default; only a run asked to publish writes into the repository's
benchmarks/results/, so a trial run never overwrites the figures the documentation quotes.
"""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path

from recsys.settings import REPO_ROOT, get_settings

PUBLISHED_DIR = REPO_ROOT / "benchmarks" / "results"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(torch_threads: int | None = None) -> str:
    """One line that tells two benchmark machines apart; the batch side adds its torch thread count."""
    line = f"{cpu_model()}, {os.cpu_count()} cores, {platform.machine()}, {platform.system()} {platform.release()}"
    return line if torch_threads is None else f"{line}, {torch_threads} torch threads"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def results_path(name: str, publish: bool, out: Path | None) -> Path:
    """Where a benchmark writes `<name>.json`: `out` if given, else the published folder or the work directory."""
    if out is not None:
        return Path(out)
    if publish:
        return PUBLISHED_DIR / f"{name}.json"
    return get_settings().work_dir / "results" / f"{name}.json"
