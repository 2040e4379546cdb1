"""`recsys benchmark ddp`: one training run in 1 process and the same run data-parallel under torchrun.

Both runs train the nightly job's candidate (training/nightly/candidate.py, the train step's own entry point) from
the same prepared data, preset, seed and global batches for a fixed number of epochs. With dropout off the
two are the same computation up to the order of floating-point sums, so the weights must agree closely;
with the preset's dropout they draw different masks and are compared on quality. tests/test_ddp.py runs the
same comparison on the tiny synthetic data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from safetensors.numpy import load_file

from recsys.evaluate import evaluate
from recsys.runinfo import hardware, now_iso, results_path
from recsys.settings import REPO_ROOT, get_settings
from training import pipeline
from training.bench.quality import resolve_dataset
from training.lm.model import GenerativeRecommender
from training.nightly.candidate import train_candidate
from training.presets import PRESETS_DIR, load_preset


def torchrun_command(nproc: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]


def train_both(
    prepared_dir: Path, preset: str, overrides: dict[str, Any], nproc: int, out: Path, threads: int = 0
) -> dict[str, Any]:
    """Train once in this process and once under torchrun with `nproc` processes; compare the results.

    threads: CPU threads per process (0: the machine's cores for the single process, shared out under DDP).
    """
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for name, processes in (("1 process", 1), (f"{nproc} processes", nproc)):
        spec = {
            "prepared": str(prepared_dir),
            "out": str(out / f"model-{processes}"),
            "preset": preset,
            "overrides": {**overrides, "num_threads": threads},
            "base_model": None,
            "catalogue_items": False,
        }
        spec_path = out / f"spec-{processes}.json"
        spec_path.write_text(json.dumps(spec))
        started = time.perf_counter()
        if processes == 1:
            stats = train_candidate(spec)
        else:
            log = out / f"torchrun-{processes}.log"
            with log.open("wb") as f:
                code = subprocess.call(
                    [*torchrun_command(processes), "-m", "training.nightly.candidate", str(spec_path)],
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    cwd=REPO_ROOT,
                    env={**os.environ, "RECSYS_NO_MALLOC_TUNING": "1"},
                )
            if code != 0:
                raise RuntimeError(f"torchrun exited with {code}:\n{log.read_text()[-3000:]}")
            stats = json.loads((Path(spec["out"]) / "train_stats.json").read_text())
        wall = time.perf_counter() - started
        model = GenerativeRecommender.load(spec["out"])
        prepared = pipeline.load_prepared(prepared_dir)
        data = pipeline.split(prepared, model.config.max_len)
        results[name] = {
            "processes": processes,
            "wall_s": round(wall, 1),
            "train_wall_s": stats["train_wall_s"],
            "tokens_per_s": stats["tokens_per_s"],
            "epochs": stats["epochs"],
            "valid_NDCG@10_per_epoch": [round(h["valid_NDCG@10"], 6) for h in stats["history"]],
            "test": evaluate(model, data.test)["masked"],
        }
    one, many = (load_file(str(out / f"model-{p}" / "model.safetensors")) for p in (1, nproc))
    diffs = {k: float(np.abs(one[k] - many[k]).max()) for k in one}
    scale = max(float(np.abs(v).max()) for v in one.values())
    a, b = results["1 process"], results[f"{nproc} processes"]
    return {
        "runs": results,
        "max_abs_weight_diff": max(diffs.values()),
        "max_abs_weight": scale,
        "test_NDCG@10_diff": b["test"]["NDCG@10"] - a["test"]["NDCG@10"],
        "valid_NDCG@10_max_diff": float(
            np.max(np.abs(np.subtract(a["valid_NDCG@10_per_epoch"], b["valid_NDCG@10_per_epoch"])))
        ),
    }


def run_ddp_benchmark(
    dataset: str,
    *,
    epochs: int,
    nproc: int,
    data_root: Path,
    console: Console,
    command: str,
    out: Path | None,
    threads: int = 0,
    publish: bool = False,
) -> dict[str, Any]:
    work = get_settings().work_dir / "benchmarks" / f"ddp-{dataset}"
    source, fmt, preset = resolve_dataset(dataset, None, None, Path(data_root), work)
    catalogue = source.parent / "catalogue.csv" if dataset == "synthetic" else None
    pipeline.prepare(source, fmt, work / "dataset", catalogue_path=catalogue)
    fixed = {"epochs": epochs, "patience": epochs + 1, "eval_every": 1, "max_minutes": 0.0, "warmup_ratio": 0.05}
    comparisons = {}
    for name, lm_dropout in (("dropout off (exact equivalence)", 0.0), ("preset dropout", None)):
        preset_path = preset
        if lm_dropout is not None:
            raw = json.loads((PRESETS_DIR / f"{preset}.json").read_text())
            raw["lm"].update(attention_dropout=lm_dropout, embedding_dropout=lm_dropout)
            preset_path = str(work / f"{preset}-no-dropout.json")
            Path(preset_path).write_text(json.dumps(raw))
        console.print(f"[bold]{name}[/]: {epochs} epochs in 1 process, then under torchrun with {nproc}")
        comparisons[name] = train_both(work / "dataset", preset_path, fixed, nproc, work / name.split(" ")[0], threads)
        runs = comparisons[name]["runs"]
        for run_name, r in runs.items():
            console.print(
                f"  {run_name:>12}: test NDCG@10 {r['test']['NDCG@10']:.4f}, {r['train_wall_s']:.0f} s, "
                f"{r['tokens_per_s']:,.0f} tok/s"
            )
        console.print(f"  max |weight difference| {comparisons[name]['max_abs_weight_diff']:.2e}")
    document = {
        "dataset": dataset,
        "date": now_iso(),
        "hardware": hardware(torch.get_num_threads()),
        "command": command,
        "backend": "gloo (CPU)",
        "nproc": nproc,
        "preset": load_preset(preset).name,
        "epochs": epochs,
        "threads_per_process": threads or "default (the machine's cores shared out among the processes)",
        "note": "Both runs draw the same global batches; under DDP each process takes a slice and the gradients "
        "are averaged, weighted by tokens. On one 2-core machine the processes share the cores, so this "
        "measures equivalence, not speed-up.",
        "comparisons": comparisons,
    }
    target = pipeline.write_json(results_path("ddp", publish, out), document)
    console.print(f"summary written to [bold]{target}[/]")
    return document
