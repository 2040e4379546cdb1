"""`recsys benchmark quality`: popularity, ALS and the LM on one dataset under the protocol, as JSON.

The named datasets are read in place from the shared data folder; any other dataset is given by path +
format + preset. The JSON summary goes to <work_dir>/results/, or benchmarks/results/ when published.
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

from recsys.console import metrics_table
from recsys.data.synthetic import write_synthetic
from recsys.runinfo import hardware, now_iso, results_path
from recsys.settings import get_settings
from training import pipeline
from training.presets import load_preset

# name -> (path under the data root, format, preset)
KNOWN_DATASETS = {
    "beauty": ("amazon-beauty/Beauty.txt", "sequences", "amazon"),
    "ml-1m-half": ("movielens-1m", "movielens", "movielens"),
    "scientific": ("amazon-scientific", "recbole", "amazon"),
    "synthetic": (None, "csv", "synthetic"),
}


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
    """Mean and SAMPLE standard deviation (ddof=1) of each metric over the runs (None with one run)."""
    values = {k: np.array([r[k] for r in runs], dtype=float) for k in runs[0]}
    spread = {k: float(v.std(ddof=1)) if len(v) > 1 else None for k, v in values.items()}
    return {k: float(v.mean()) for k, v in values.items()}, spread


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
    publish: bool = False,
) -> dict:
    work = get_settings().work_dir / "benchmarks" / dataset
    source, source_fmt, default_preset = resolve_dataset(dataset, path, fmt, Path(data_root), work)
    console.rule(f"{dataset}: {source} ({source_fmt})")
    catalogue = source.parent / "catalogue.csv" if dataset == "synthetic" and path is None else None
    prepared = pipeline.prepare(source, source_fmt, work / "dataset", catalogue_path=catalogue)
    console.print(prepared.summary)

    results: dict[str, dict] = {}
    for kind in models:
        runs, als_selection = [], None
        for seed in seeds if kind == "lm" else seeds[:1]:
            chosen = load_preset(preset or default_preset, {"seed": seed, "epochs": epochs})
            data = pipeline.split(prepared, chosen.max_len)
            if kind == "als":  # tuned on validation like the LM's epochs, not taken from the preset as is
                als_selection = pipeline.select_als(chosen, data, prepared)
                chosen = replace(chosen, als=als_selection["chosen"])
                console.print(f"als: chose {als_selection['chosen']} on validation")
            model = pipeline.new_model(kind, chosen)
            console.print(f"[bold]{kind}[/] seed {seed}: training on {len(data.train.items)} sequences")
            stats = pipeline.fit(model, data, prepared, refit_with_valid=chosen.train.refit_with_valid)
            model.save(work / "models" / f"{kind}-seed{seed}")
            splits = pipeline.evaluate_splits(
                model, data, stats.pop("valid_metrics", None), refit=stats.get("refit_with_valid", False)
            )
            runs.append({**splits, **stats, "seed": seed})
            console.print(metrics_table(f"{kind} seed {seed} (test, masked)", {kind: runs[-1]}))
        entry = dict(runs[0])
        entry["n_seeds"] = len(runs)
        if len(runs) > 1:
            for split_name in ("test", "test_unmasked", "valid", "valid_refit_not_held_out"):
                if all(r.get(split_name) is not None for r in runs):
                    entry[split_name], entry[f"{split_name}_std"] = mean_and_spread([r[split_name] for r in runs])
            entry["spread"] = "*_std: sample standard deviation (ddof=1) over n_seeds seeds"
            entry["seeds"] = runs
        entry["hyperparameters"] = (
            {
                "max_len": chosen.max_len,
                "members": [{"lm": asdict(lm), "train": asdict(train)} for lm, train in chosen.members],
            }
            if kind == "lm" and chosen.members
            else {"max_len": chosen.max_len, "lm": asdict(chosen.lm), "train": asdict(chosen.train)}
            if kind == "lm"
            else chosen.als
            if kind == "als"
            else {}
        )
        if als_selection is not None:
            entry["als_selection"] = als_selection
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
    target = pipeline.write_json(results_path(f"quality-{dataset}", publish, out), document)
    console.print(f"summary written to [bold]{target}[/]")
    return document


def run_slates_benchmark(
    dataset: str,
    *,
    n: int,
    beam_width: int,
    preset: str | None,
    data_root: Path,
    max_minutes: float | None,
    max_users: int | None,
    console: Console,
    command: str,
    out: Path | None = None,
    publish: bool = False,
) -> dict:
    """Generated next-n slates (beam search) vs the top-n of one ranking step, on a multi-step holdout."""
    from recsys.data.sequences import build_sequences, multi_step_holdout
    from training.lm.generate import generate_slates, slate_metrics

    work = get_settings().work_dir / "benchmarks" / f"slates-{dataset}"
    source, source_fmt, default_preset = resolve_dataset(dataset, None, None, Path(data_root), work)
    prepared = pipeline.prepare(source, source_fmt, work / "dataset")
    chosen = load_preset(preset or default_preset, {"max_minutes": max_minutes})
    holdout = multi_step_holdout(build_sequences(prepared.events, prepared.vocab), n, chosen.max_len)
    console.print(f"{len(holdout.user_ids)} users evaluated on their last {n} events")
    model = pipeline.new_model("lm", chosen)
    model.fit(holdout.train, len(prepared.vocab), holdout.valid, vocab=prepared.vocab)
    model.save(work / "lm")

    count = min(max_users or len(holdout.user_ids), len(holdout.user_ids))
    inputs, futures = holdout.inputs[:count], holdout.futures[:count]
    ranked, _ = model.recommend(inputs, k=n, exclude_seen=True)
    results = {"top_n_one_step": slate_metrics(ranked, futures)}
    for width in sorted({1, beam_width}):
        name = "generated_greedy" if width == 1 else f"generated_beam{width}"
        results[name] = slate_metrics(generate_slates(model, inputs, n=n, beam_width=width), futures)
    for name, metrics in results.items():
        console.print(f"{name:>20}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "users"))
    document = {
        "dataset": dataset,
        "protocol": f"multi-step holdout: users with >= {n + 3} events; the last {n} events are the future; "
        f"the model trains on the events before them (minus one validation event); input = the last "
        f"{chosen.max_len} events before the future; history items excluded from every slate",
        "date": now_iso(),
        "hardware": hardware(torch.get_num_threads()),
        "command": command,
        "n": n,
        "users": count,
        "train": model.stats,
        "results": results,
    }
    target = pipeline.write_json(results_path(f"slates-{dataset}", publish, out), document)
    console.print(f"summary written to [bold]{target}[/]")
    return document


def measure_throughput(
    lm_config,
    n_items: int,
    lengths: np.ndarray,
    batch_size: int,
    steps: int,
    seed: int = 0,
    precision: str = "fp32",
) -> dict[str, float]:
    """Real (unpadded) training tokens/s of the trainer's own step on random windows of the given lengths."""
    import time

    from recsys.data.vocab import ItemVocab
    from training.lm.attention import training_attention
    from training.lm.model import GenerativeRecommender, TrainConfig
    from training.lm.train import bucketed_batches, collate, next_item_loss

    rng = np.random.default_rng(seed)
    model = GenerativeRecommender(lm_config, TrainConfig(seed=seed, precision=precision))
    model.init_model(ItemVocab([str(i) for i in range(n_items)]))
    model.lm.train()
    optimizer = torch.optim.AdamW(model.lm.parameters(), lr=1e-3)
    windows = [rng.integers(0, n_items, size=int(n)) for n in lengths]
    batches = bucketed_batches(lengths, batch_size, rng)
    timings, tokens, padded = [], [], []
    with training_attention(model.lm):
        for step in range(steps + 2):  # two warm-up steps are not timed
            ids, mask, labels = collate([windows[i] for i in batches[step % len(batches)]], model.token_offset)
            started = time.perf_counter()
            loss = next_item_loss(model, ids, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step >= 2:
                timings.append(time.perf_counter() - started)
                tokens.append(int(mask.sum()))
                padded.append(mask.numel())
    return {
        "real_tokens_per_s": round(sum(tokens) / sum(timings), 1),
        "median_step_ms": round(1000 * float(np.median(timings)), 2),
        "padding_share": round(1 - sum(tokens) / sum(padded), 4),
        "steps": steps,
        "batch_size": batch_size,
        "n_items": n_items,
        "max_len": lm_config.max_len,
        "precision": precision,
    }


# items of the catalogue each preset is meant for (the throughput benchmark's vocabulary size)
PRESET_CATALOGUE_SIZES = {"amazon": 12101, "movielens": 3706, "synthetic": 600}


def run_throughput_benchmark(
    steps: int, console: Console, command: str, out: Path | None = None, publish: bool = False
) -> dict:
    from training.lm.model import LMConfig

    results = {}
    fixed = LMConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=256, max_len=200)
    rng = np.random.default_rng(0)
    full_windows = np.full(128 * 8, 201)
    for precision, suffix in (("fp32", ""), ("bf16", "_bf16")):
        results[f"fixed_h64_l2_len200_b128{suffix}"] = measure_throughput(
            fixed, 4000, full_windows, 128, steps, precision=precision
        )
    for name, n_items in PRESET_CATALOGUE_SIZES.items():
        chosen = load_preset(name)
        # window lengths spread evenly over 2..max_len+1, as the trainer cuts real sequences
        lengths = rng.integers(2, chosen.max_len + 2, size=chosen.train.batch_size * 16)
        results[f"preset_{name}"] = measure_throughput(
            chosen.lm, n_items, lengths, chosen.train.batch_size, steps, precision=chosen.train.precision
        )
    for name, figures in results.items():
        console.print(
            f"{name:>28}: {figures['real_tokens_per_s']:>10,.0f} real tokens/s, "
            f"median step {figures['median_step_ms']:.1f} ms, padding {figures['padding_share']:.1%}"
        )
    document = {
        "date": now_iso(),
        "hardware": hardware(torch.get_num_threads()),
        "command": command,
        "malloc_tuned": os.environ.get("MALLOC_MMAP_MAX_") == "0",
        "results": results,
    }
    target = pipeline.write_json(results_path("train-throughput", publish, out), document)
    console.print(f"summary written to [bold]{target}[/]")
    return document
