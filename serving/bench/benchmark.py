"""`recsys benchmark serving`: latency and throughput of the real service, against a torch-in-FastAPI baseline.

For each bundle, in one run and on loopback only:
1. in-process engine latency at batch 1 (`recommend_for_user`, k=10): p50, p99;
2. the real server (`recsys serve`, a separate process) driven from this process by serving/bench/loadgen.py:
   latency p50/p99/p99.9 at concurrency 1, then throughput at concurrency N (8–32);
3. the same two loads against training/bench/torch_baseline.py (FastAPI + the torch checkpoint, scoring the whole
   catalogue per request: what a team writes first), when the bundle's checkpoint is given.
Every phase is bounded in time. The JSON goes to <work_dir>/results/serving.json, or benchmarks/results/ when
published.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

from recsys import bundle
from recsys.bundle.layout import HISTORIES
from recsys.durable import atomic_write_json
from recsys.harness import HOST, ServerProcess, free_port, stop_process, wait_until_ready
from recsys.runinfo import hardware, now_iso, results_path
from recsys.settings import REPO_ROOT
from serving.bench.loadgen import LoadResult, run_load

BASELINE_MODULE = "training.bench.torch_baseline"  # run as a child process: the service side never imports torch


def single_root(bundle_dir: Path, work: Path) -> Path:
    """A bundles root whose CURRENT names this bundle (a symlink): the service always serves from a root."""
    root = work / "bundles"
    root.mkdir(parents=True, exist_ok=True)
    version = bundle_dir.name
    (root / version).symlink_to(bundle_dir.resolve(), target_is_directory=True)
    (root / bundle.CURRENT).write_text(version + "\n")
    return root


def inprocess_latency(bundle_dir: Path, users: list[str], seconds: float) -> dict:
    """Batch-1 `recommend_for_user` timings in this process (1 thread, like one worker)."""
    from recsys.bundle.reader import BundleRecommender

    engine = BundleRecommender(bundle_dir, threads=1)
    for user in users[:200]:  # warm-up: first calls allocate
        engine.recommend_for_user(user, 10)
    timings = []
    deadline = time.perf_counter() + seconds
    i = 0
    while time.perf_counter() < deadline or len(timings) < 1000:
        user = users[i % len(users)]
        i += 1
        started = time.perf_counter()
        engine.recommend_for_user(user, 10)
        timings.append(time.perf_counter() - started)
    ms = np.asarray(timings) * 1000
    return {
        "items": engine.n_items,
        "max_len": engine.max_len,
        "version": engine.version,
        "calls": len(timings),
        "p50_ms": round(float(np.percentile(ms, 50)), 4),
        "p99_ms": round(float(np.percentile(ms, 99)), 4),
    }


def load_phases(port: int, paths: list[str], concurrency: int, duration_s: float, warmup_s: float) -> dict:
    run_load(HOST, port, paths, concurrency, warmup_s, record=False)
    c1 = run_load(HOST, port, paths, 1, duration_s)
    cn = run_load(HOST, port, paths, concurrency, duration_s)
    return {"c1": c1, "cn": cn}


def _describe(result: LoadResult) -> str:
    return (
        f"c={result.concurrency}: {result.rps:,.0f} req/s, p50 {result.percentile_ms(50) or 0:.2f} ms, "
        f"p99 {result.percentile_ms(99) or 0:.2f} ms, p99.9 {result.percentile_ms(99.9) or 0:.2f} ms, "
        f"{result.errors} errors"
    )


def run_service(root: Path, work: Path, paths: list[str], args: dict, log) -> dict:
    """The service as it runs for real (`recsys serve`, JSON access log on), in its own process."""
    with ServerProcess(root, work / "service", workers=args["workers"]) as server:
        phases = load_phases(server.port, paths, args["concurrency"], args["duration_s"], args["warmup_s"])
    log(f"  service  {_describe(phases['c1'])}")
    log(f"  service  {_describe(phases['cn'])}")
    return phases


def run_baseline(checkpoint: Path, bundle_dir: Path, work: Path, paths: list[str], args: dict, log) -> dict:
    port = free_port()
    command = [sys.executable, "-m", BASELINE_MODULE, "--checkpoint", str(checkpoint), "--bundle", str(bundle_dir)]
    command += ["--port", str(port), "--workers", str(args["workers"])]
    with (work / "baseline.log").open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        try:
            wait_until_ready(f"http://{HOST}:{port}/healthz", process, timeout_s=300)
            phases = load_phases(port, paths, args["concurrency"], args["duration_s"], args["warmup_s"])
        finally:
            stop_process(process, 15)
    log(f"  baseline {_describe(phases['c1'])}")
    log(f"  baseline {_describe(phases['cn'])}")
    return phases


def benchmark_bundle(name: str, path: Path, checkpoint: Path | None, args: dict, log) -> dict:
    bundle_dir = bundle.resolve(path)
    bundle.verify(bundle_dir)
    import polars as pl

    users = pl.read_parquet(bundle_dir / HISTORIES, columns=["user_id"])["user_id"].to_list()
    random.Random(0).shuffle(users)
    users = users[:5000]
    paths = [f"/v1/users/{quote(u, safe='')}/recommendations?k=10" for u in users]
    log(f"[{name}] {bundle_dir.name}: in-process engine, batch 1")
    inproc = inprocess_latency(bundle_dir, users, args["duration_s"])
    log(f"  in-process p50 {inproc['p50_ms']:.3f} ms, p99 {inproc['p99_ms']:.3f} ms ({inproc['calls']} calls)")
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        work = Path(tmp)
        service = run_service(single_root(bundle_dir, work), work, paths, args, log)
        baseline = run_baseline(checkpoint, bundle_dir, work, paths, args, log) if checkpoint else None
    c1, cn = service["c1"], service["cn"]
    entry = {
        "items": inproc["items"],
        "max_len": inproc["max_len"],
        "bundle_version": inproc["version"],
        "inprocess_p50_ms": inproc["p50_ms"],
        "inprocess_p99_ms": inproc["p99_ms"],
        "http_c1_p50_ms": c1.summary()["p50_ms"],
        "http_c1_p99_ms": c1.summary()["p99_ms"],
        "http_c1_p999_ms": c1.summary()["p999_ms"],
        "http_rps": round(cn.rps, 1),
        "http_concurrency": cn.concurrency,
        "http_cn_p50_ms": cn.summary()["p50_ms"],
        "http_cn_p99_ms": cn.summary()["p99_ms"],
        "errors": c1.errors + cn.errors,
        "baseline_rps": None,
        "baseline_http_c1_p50_ms": None,
        "baseline_http_c1_p99_ms": None,
        "baseline_errors": None,
        "rps_ratio_vs_baseline": None,
        "phases": {"service": {"c1": c1.summary(), "cn": cn.summary()}},
    }
    if c1.error_samples or cn.error_samples:
        entry["error_samples"] = (c1.error_samples + cn.error_samples)[:5]
    if baseline is not None:
        b1, bn = baseline["c1"], baseline["cn"]
        entry.update(
            baseline_rps=round(bn.rps, 1),
            baseline_http_c1_p50_ms=b1.summary()["p50_ms"],
            baseline_http_c1_p99_ms=b1.summary()["p99_ms"],
            baseline_errors=b1.errors + bn.errors,
            rps_ratio_vs_baseline=round(cn.rps / bn.rps, 2) if bn.rps else None,
        )
        entry["phases"]["baseline"] = {"c1": b1.summary(), "cn": bn.summary()}
        log(f"  throughput ratio service / baseline: {entry['rps_ratio_vs_baseline']}x")
    return entry


def run_serving_benchmark(
    bundles: dict[str, Path],
    checkpoints: dict[str, Path],
    *,
    duration_s: float,
    warmup_s: float,
    concurrency: int,
    workers: int,
    out: Path | None,
    command: str,
    log=print,
    publish: bool = False,
) -> dict:
    unknown = sorted(set(checkpoints) - set(bundles))
    if unknown:
        raise ValueError(f"--checkpoint names no --bundle: {', '.join(unknown)}")
    args = {"duration_s": duration_s, "warmup_s": warmup_s, "concurrency": concurrency, "workers": workers}
    document = {
        "date": now_iso(),
        "hardware": hardware(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "command": command,
        "settings": {
            **args,
            "k": 10,
            "route": "GET /v1/users/{user_id}/recommendations?k=10",
            "client": "serving/bench/loadgen.py: closed-loop keep-alive HTTP/1.1 clients on asyncio, same machine",
            "baseline": "training/bench/torch_baseline.py: FastAPI + the torch checkpoint, full-catalogue scores",
        },
        "bundles": {},
    }
    busy = os.getloadavg()[0]
    if busy > 0.5 * (os.cpu_count() or 1):
        log(f"warning: load average {busy:.1f} on {os.cpu_count()} cores: other work will distort these figures")
    for name, path in bundles.items():
        document["bundles"][name] = benchmark_bundle(name, Path(path), checkpoints.get(name), args, log)
    document["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    target = atomic_write_json(results_path("serving", publish, out), document)
    log(f"results written to {target}")
    return document
