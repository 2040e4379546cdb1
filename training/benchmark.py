"""`recsys benchmark quality`: popularity, ALS and the LM on one dataset under the protocol, as JSON.

The named datasets are read in place from the shared data folder; any other dataset is given by path +
format + preset. The summary follows the benchmark-results contract of DESIGN.md.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
from rich.console import Console

from recsys.console import metrics_table
from recsys.settings import REPO_ROOT, get_settings
from recsys.synthetic import write_synthetic
from training import pipeline
from training.presets import load_preset

# name -> (path under the data root, format, preset)
KNOWN_DATASETS = {
    "beauty": ("amazon-beauty/Beauty.txt", "sequences", "amazon"),
    "ml-1m-half": ("movielens-1m", "movielens", "movielens"),
    "scientific": ("amazon-scientific", "recbole", "amazon"),
    "synthetic": (None, "csv", "synthetic"),
}
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


def resolve_dataset(
    name: str, path: Path | None, fmt: str | None, data_root: Path, work: Path
) -> tuple[Path, str, str]:
    """(source path, format, default preset) for a named dataset or an explicit path + format."""
    if path is not None:
        if fmt is None:
            raise ValueError("--path needs --format (csv | parquet | movielens | sequences | recbole)")
        return path, fmt, KNOWN_DATASETS.get(name, (None, None, "amazon"))[2]
    if name not in KNOWN_DATASETS:
        raise ValueError(f"unknown dataset {name!r}: use one of {', '.join(KNOWN_DATASETS)} or --path and --format")
    relative, known_fmt, preset = KNOWN_DATASETS[name]
    if relative is None:
        events_csv, _ = write_synthetic(work / "raw", "default", 0)
        return events_csv, known_fmt, preset
    source = data_root / relative
    if not source.exists():
        raise FileNotFoundError(f"{source} not found: set --data-root or RECSYS_DATA_ROOT to the shared data folder")
    return source, known_fmt, preset


def mean_and_spread(runs: list[dict]) -> tuple[dict, dict]:
    keys = runs[0].keys()
    values = {k: np.array([r[k] for r in runs], dtype=float) for k in keys}
    return {k: float(v.mean()) for k, v in values.items()}, {k: float(v.std()) for k, v in values.items()}


def run_quality_benchmark(
    dataset: str,
    *,
    path: Path | None,
    fmt: str | None,
    preset: str | None,
    models: list[str],
    seeds: list[int],
    data_root: Path,
    out: Path | None,
    epochs: int | None,
    console: Console,
    command: str,
) -> dict:
    work = get_settings().work_dir / "benchmarks" / dataset
    source, source_fmt, default_preset = resolve_dataset(dataset, path, fmt, Path(data_root), work)
    console.rule(f"{dataset}: {source} ({source_fmt})")
    catalogue = source.parent / "catalogue.csv" if dataset == "synthetic" and path is None else None
    prepared = pipeline.prepare(source, source_fmt, work / "dataset", catalogue_path=catalogue)
    console.print(prepared.summary)

    results: dict[str, dict] = {}
    for kind in models:
        runs = []
        for seed in seeds if kind == "lm" else seeds[:1]:
            chosen = load_preset(preset or default_preset, {"seed": seed, "epochs": epochs})
            data = pipeline.split(prepared, chosen.max_len)
            model = pipeline.new_model(kind, chosen)
            console.print(f"[bold]{kind}[/] seed {seed}: training on {len(data.train.items)} sequences")
            stats = pipeline.fit(model, data, prepared)
            model.save(work / "models" / f"{kind}-seed{seed}")
            runs.append({**pipeline.evaluate_splits(model, data), **stats, "seed": seed})
            console.print(metrics_table(f"{kind} seed {seed} (test, masked)", {kind: runs[-1]}))
        entry = dict(runs[0])
        if len(runs) > 1:
            for split_name in ("test", "test_unmasked", "valid"):
                entry[split_name], entry[f"{split_name}_std"] = mean_and_spread([r[split_name] for r in runs])
            entry["seeds"] = runs
        entry["hyperparameters"] = (
            {"max_len": chosen.max_len, "lm": asdict(chosen.lm), "train": asdict(chosen.train)}
            if kind == "lm"
            else chosen.als
            if kind == "als"
            else {}
        )
        entry["preset"] = chosen.name
        results[kind] = entry

    console.print(metrics_table(f"{dataset}: test, history items masked (headline)", results))
    console.print(metrics_table(f"{dataset}: test, unmasked", results, "test_unmasked"))
    document = pipeline.results_document(
        dataset,
        command,
        results,
        {"source": str(source), "format": source_fmt, "data_summary": prepared.summary},
    )
    target = out or RESULTS_DIR / f"quality-{dataset}.json"
    pipeline.write_json(target, document)
    console.print(f"summary written to [bold]{target}[/]")
    return document
