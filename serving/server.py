"""Run the service with uvicorn from Settings (what `recsys serve` calls).

Thread settings first: each worker is one process doing batch-1 work, so onnxruntime and FAISS get one
thread each (OpenMP threads took p99 from ~2 ms to 17.7 ms on 2 cores, measured); the environment
variables are set before any worker imports numpy, FAISS or onnxruntime. Settings reach worker processes
through the environment too (RECSYS_*), since uvicorn starts workers by importing the app factory.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from recsys.settings import Settings

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def export_settings(settings: Settings) -> None:
    """Put every service setting in the environment, where the workers' create_app() reads them."""
    for name, value in settings.model_dump(exclude_none=True).items():
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        os.environ[f"RECSYS_{name.upper()}"] = str(value)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(settings.threads)


def prepare_multiprocess_metrics(settings: Settings) -> None:
    """Several workers: Prometheus values go to per-process files that /metrics aggregates."""
    if settings.workers == 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    directory = Path(settings.work_dir) / "prometheus"
    shutil.rmtree(directory, ignore_errors=True)  # values from a previous run would be summed in
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def run(settings: Settings) -> None:
    export_settings(settings)
    prepare_multiprocess_metrics(settings)
    import uvicorn

    from serving.logs import log_config

    uvicorn.run(
        "serving.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=log_config(settings.log_level),
        access_log=False,  # the middleware writes a JSON access line with the route and bundle version
        server_header=False,
        proxy_headers=False,
    )
