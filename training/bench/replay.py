"""`recsys benchmark nightly-replay`: a week of the nightly job, replayed from a dataset with timestamps.

The events are sorted by time. The first `base_share` of them is the history the system starts with (the
first run trains from scratch: that is the first production model); the rest is cut into `nights` equal
slices, dropped one by one into the job's inbox, and `recsys nightly`'s own code runs once per night
(warm start from production, gate, export, promote). Per night the summary keeps the candidate's and
production's test NDCG@10 on that night's holdout, the gate's decision and the wall time.

Then, on the last night's data: the same model trained from scratch with the initial run's budget, against
the last night's warm-started candidate (quality ratio, training-time ratio); a gate drill (a candidate
trained on shuffled sequences must be refused and CURRENT must not move); and the SIGKILL drill of
training/nightly/drills.py on the tiny synthetic data.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import polars as pl
import torch
from rich.console import Console

from recsys import bundle
from recsys.data.importers import read_dataset
from recsys.data.synthetic import write_synthetic
from recsys.data.validate import validate
from recsys.durable import atomic_write
from recsys.runinfo import hardware, now_iso, results_path
from recsys.settings import REPO_ROOT, get_settings
from training import pipeline
from training.bench.quality import KNOWN_DATASETS
from training.nightly.job import NightlyConfig, nightly_recipe, read_json, run_nightly
from training.presets import load_preset

REPLAY_DATASETS = {"ml-1m-half": "movielens", "synthetic": "synthetic"}


def _source(dataset: str, data_root: Path, work: Path) -> tuple[pl.DataFrame, Path | None, str]:
    """Typed events sorted by time, the catalogue file, the preset."""
    if dataset not in REPLAY_DATASETS:
        raise ValueError(f"the replay needs real timestamps: use one of {', '.join(REPLAY_DATASETS)}")
    if dataset == "synthetic":
        events_csv, catalogue = write_synthetic(work / "raw", "default", 0)
        raw = read_dataset(events_csv, "csv")
    else:
        folder = Path(data_root) / KNOWN_DATASETS[dataset][0]
        if not folder.exists():
            raise FileNotFoundError(f"{folder} not found: set --data-root or RECSYS_DATA_ROOT")
        raw = read_dataset(folder, "movielens")
        catalogue = folder / "movies.dat"
    events = validate(raw, max_reject_rate=0.05).events.sort("timestamp", "row")
    return events, catalogue, REPLAY_DATASETS[dataset]


def _slices(events: pl.DataFrame, base_share: float, nights: int) -> list[pl.DataFrame]:
    """The initial history, then `nights` slices of equal size, in time order."""
    n = events.height
    base = int(n * base_share)
    bounds = [base + round((n - base) * k / nights) for k in range(nights + 1)]
    return [events.slice(0, base)] + [events.slice(a, b - a) for a, b in zip(bounds, bounds[1:], strict=False)]


def _deliver(frame: pl.DataFrame, inbox: Path, name: str) -> None:
    """Drop a slice into the inbox as the contract's columns, atomically (the job never reads half a file)."""
    out = frame.select(
        "user_id", "item_id", pl.col("timestamp").cast(pl.String), "event_type", pl.col("value").cast(pl.String)
    )
    atomic_write(inbox / name, out.write_parquet)


def _night_row(summary: dict[str, Any], cfg: NightlyConfig, wall: float, events: int) -> dict[str, Any]:
    run_dir = cfg.work_dir / "runs" / summary["run_id"]
    train = read_json(run_dir / "steps" / "train.json") if (run_dir / "steps" / "train.json").exists() else {}
    metrics = summary["metrics"]
    return {
        "run_id": summary["run_id"],
        "events_added": events,
        "ndcg10": (metrics.get("candidate") or {}).get("NDCG@10"),
        "production_ndcg10": (metrics.get("production") or {}).get("NDCG@10"),
        "popularity_ndcg10": (metrics.get("popularity") or {}).get("NDCG@10"),
        "hr10": (metrics.get("candidate") or {}).get("HR@10"),
        "promoted": summary["promoted"],
        "status": summary["status"],
        "wall_s": round(wall, 1),
        "train_wall_s": train.get("train_wall_s"),
        "mode": train.get("mode"),
        "epochs": train.get("epochs"),
        "best_epoch": train.get("best_epoch"),
        "new_items": train.get("new_items"),
        "new_item_rows_from_text": train.get("new_item_rows_from_text"),
        "step_wall_s": {s["step"]: s["wall_s"] for s in summary["steps"]},
    }


SCRATCH_KEY = "replay_scratch_key.json"


def _scratch_key(spec: dict[str, Any]) -> dict[str, Any]:
    """What the from-scratch model depends on: the prepared data's content and the training settings."""
    digest = hashlib.sha256()
    prepared = Path(spec["prepared"])
    events = pl.read_parquet(prepared / "events.parquet")
    digest.update(events.hash_rows(seed=0).to_numpy().tobytes())
    for extra in (prepared / "vocab.json", Path(spec["text"]) if spec["text"] else None):
        if extra is not None:
            digest.update(extra.read_bytes())
    preset = asdict(load_preset(spec["preset"], spec["overrides"]))  # the overrides applied: all that trains
    settings = {"catalogue_items": spec["catalogue_items"], "preset": json.loads(json.dumps(preset, default=str))}
    return {"data_sha256": digest.hexdigest(), "settings": settings}


def _read_key(folder: Path) -> dict[str, Any] | None:
    path = folder / SCRATCH_KEY
    return json.loads(path.read_text()) if path.exists() and (folder / "train_stats.json").exists() else None


def _scratch_comparison(
    cfg: NightlyConfig, last_run: str, minutes: float, console: Console, kept: Path | None = None
) -> dict[str, Any]:
    """The last night's data, trained from scratch with the initial budget, scored like the warm candidate.

    `kept`: the previous replay's from-scratch model; reused when its data and settings match exactly.
    """
    from recsys.data.prepared import load_prepared
    from recsys.evaluate import evaluate
    from recsys.models.adapters import RemappedScorer
    from training.export import without_items
    from training.lm.model import GenerativeRecommender
    from training.nightly.candidate import train_candidate
    from training.nightly.job import retired_items

    run_dir = cfg.work_dir / "runs" / last_run
    out = cfg.work_dir.parent / "scratch-comparison"
    spec: dict[str, Any] = {
        "prepared": str(run_dir / "prepared"),
        "out": str(out),
        "preset": cfg.preset,
        "overrides": {"seed": cfg.seed, "max_minutes": minutes},
        "base_model": None,
        "text": str(run_dir / "text_embeddings.safetensors")
        if (run_dir / "text_embeddings.safetensors").exists()
        else None,
        "catalogue_items": cfg.catalogue_items,
    }
    key = _scratch_key(spec)
    reused = kept is not None and _read_key(kept) == key
    if reused:
        # same data, preset, seed and budget as the kept model: training is deterministic, so reuse it
        shutil.rmtree(out, ignore_errors=True)
        shutil.move(str(kept), out)
        stats = read_json(out / "train_stats.json")
        console.print(f"[bold]from scratch[/]: reusing the kept model (same data and settings): {out}")
    else:
        console.print(f"[bold]from scratch[/] on the data of {last_run}, budget {minutes} min")
        stats = train_candidate(spec)
        (out / SCRATCH_KEY).write_text(json.dumps(key, indent=2))
    prepared = load_prepared(run_dir / "prepared")
    model = GenerativeRecommender.load(out)
    served = without_items(model, retired_items(prepared, model.vocab.item_ids))
    data = pipeline.split(prepared, model.config.max_len)
    ndcg = evaluate(RemappedScorer(served, served.vocab, model.vocab), data.test)["masked"]["NDCG@10"]
    warm = read_json(run_dir / "steps" / "train.json")
    warm_ndcg = read_json(run_dir / "steps" / "evaluate.json")["candidate"]["NDCG@10"]
    stopped = "time budget" if stats["train_wall_s"] >= minutes * 60 * 0.98 else "early stopping"
    return {
        "night": last_run,
        "warm_ndcg10": warm_ndcg,
        "scratch_ndcg10": ndcg,
        "ndcg10_ratio": warm_ndcg / ndcg if ndcg else None,
        "warm_train_s": warm["train_wall_s"],
        "scratch_train_s": stats["train_wall_s"],
        "time_ratio": warm["train_wall_s"] / stats["train_wall_s"] if stats["train_wall_s"] else None,
        "warm_epochs": warm["epochs"],
        "scratch_epochs": stats["epochs"],
        "scratch_best_epoch": stats["best_epoch"],
        "scratch_stopped_by": stopped,
        "scratch_reused": reused,  # --reuse-scratch: the previous replay's model, same data and settings
    }


def converged_reference(
    dataset: str, warm_ndcg: float | None, replay_scratch_ndcg: float | None = None, publish: bool = False
) -> dict[str, Any] | None:
    """The LM of `recsys benchmark quality` on the same dataset (trained from scratch on the same full data and
    split the last night has), for context: the replay's own scratch run is time-capped. The warm model is
    held against the stronger of the two from-scratch models, so a weak reference cannot pass it. Read from
    where a quality run with the same `publish` writes."""
    path = results_path(f"quality-{dataset}", publish, None)
    if not path.exists():
        return None
    quality = json.loads(path.read_text())
    lm = quality.get("models", {}).get("lm")
    if not lm:
        return None
    ndcg = lm["test"]["NDCG@10"]
    return {
        "source": str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path),
        "date": quality.get("date"),
        "ndcg10": ndcg,
        "train_wall_s": lm.get("train_wall_s"),
        "epochs": lm.get("epochs"),
        "refit_with_valid": (lm.get("hyperparameters", {}).get("train", {}) or {}).get("refit_with_valid"),
        "warm_ndcg10_ratio": warm_ndcg / ndcg if warm_ndcg and ndcg else None,
        # the acceptance's quality half against the stronger from-scratch model (the time half: the warm
        # fine-tune of one night is a small fraction of either's training time, see warm_vs_scratch)
        "warm_within_2pct_of_stronger_scratch": bool(
            warm_ndcg and warm_ndcg / max(ndcg, replay_scratch_ndcg or 0) >= 0.98
        ),
    }


def both_kill_drills(work: Path, log: Any) -> dict[str, Any]:
    """The drill twice: one replay killed at every point in turn, then one fresh copy per point killed once.

    `runs` and `failures` add both up; each part keeps its own points and problems.
    """
    from training.nightly.drills import KILL_POINTS, kill_drill

    chain = kill_drill(work / "chain", KILL_POINTS, chain=True, log=log)
    each = kill_drill(work / "each", KILL_POINTS, chain=False, log=log)
    return {
        "dataset": chain["dataset"],
        "runs": chain["runs"] + each["runs"],
        "failures": chain["failures"] + each["failures"],
        "chain": chain,
        "one_kill_per_copy": each,
    }


def rerun_kill_drill(
    dataset: str, *, console: Console, command: str, out: Path | None = None, publish: bool = False
) -> dict[str, Any]:
    """Run only the SIGKILL drill and put its result into an existing replay summary (the replay is long)."""
    target = results_path("nightly-replay", publish, out)
    if not target.exists():
        raise FileNotFoundError(f"{target} not found: run the replay first")
    document = json.loads(target.read_text())
    work = get_settings().work_dir / "benchmarks" / f"nightly-replay-{dataset}" / "kill-drill"
    shutil.rmtree(work, ignore_errors=True)
    console.rule("SIGKILL drill (synthetic tiny data)")
    document["kill_tests"] = both_kill_drills(work, lambda line: console.print(line, markup=False))
    document["kill_tests"] |= {"command": command, "date": now_iso()}
    comparison = document.get("warm_vs_scratch") or {}
    document["converged_scratch_reference"] = converged_reference(
        dataset, comparison.get("warm_ndcg10"), comparison.get("scratch_ndcg10"), publish
    )
    pipeline.write_json(target, document)
    console.print(f"kill drill: {document['kill_tests']['runs']} kills, {document['kill_tests']['failures']} failures")
    return document


def run_replay(
    dataset: str,
    *,
    nights: int,
    base_share: float,
    scratch_minutes: float,
    warm_minutes: float,
    warm_epochs: int | None,
    warm_shrink: float | None,
    kill_drill: bool,
    reuse_scratch: bool,
    data_root: Path,
    console: Console,
    command: str,
    out: Path | None = None,
    publish: bool = False,
) -> dict[str, Any]:
    work = get_settings().work_dir / "benchmarks" / f"nightly-replay-{dataset}"
    kept = None
    if reuse_scratch and (work / "scratch-comparison").exists():
        kept = work.with_name(f"{work.name}-kept-scratch")
        shutil.rmtree(kept, ignore_errors=True)
        shutil.move(str(work / "scratch-comparison"), kept)
    shutil.rmtree(work, ignore_errors=True)
    events, catalogue, preset = _source(dataset, Path(data_root), work)
    slices = _slices(events, base_share, nights)
    inbox = work / "inbox"
    cfg = NightlyConfig(
        work_dir=work / "nightly",
        bundles_root=work / "bundles",
        inbox=inbox,
        journal=None,
        catalogue=catalogue,
        preset=preset,
        # the replay's budgets; epochs and shrink: the preset's nightly recipe unless given (None)
        recipe={
            "scratch_max_minutes": scratch_minutes,
            "warm_max_minutes": warm_minutes,
            "warm_epochs": warm_epochs,
            "warm_shrink": warm_shrink,
        },
    )
    recipe = nightly_recipe(cfg)

    def log(line: str) -> None:
        console.print(line, markup=False, highlight=False)

    rows = []
    for night, frame in enumerate(slices):
        name = "initial" if night == 0 else f"night-{night}"
        _deliver(frame, inbox, f"{night:02d}-{name}.parquet")
        lo, hi = frame["timestamp"].min(), frame["timestamp"].max()
        console.rule(f"{name}: {frame.height:,} events ({_day(lo)} .. {_day(hi)})")
        cfg.run_id = f"{night:02d}-{name}"
        started = time.perf_counter()
        summary = run_nightly(cfg, log)
        rows.append(_night_row(summary, cfg, time.perf_counter() - started, frame.height) | {"night": night})
    last = rows[-1]["run_id"]
    comparison = _scratch_comparison(cfg, last, scratch_minutes, console, kept)
    if kept is not None:
        shutil.rmtree(kept, ignore_errors=True)
    console.print(comparison)

    console.rule("gate drill: a candidate trained on shuffled sequences")
    before = bundle.current_version(cfg.bundles_root)
    cfg.run_id, cfg.drill_shuffle, cfg.force = "drill-shuffled", True, True
    drill = run_nightly(cfg, log)
    refused = drill["status"] == "refused" and bundle.current_version(cfg.bundles_root) == before
    gate_drill = {"status": drill["status"], "current_unchanged": bundle.current_version(cfg.bundles_root) == before}
    gate_drill |= {k: drill["gate"][k] for k in ("candidate", "production", "popularity", "tolerance", "reasons")}

    kill = None
    if kill_drill:
        console.rule("SIGKILL drill (synthetic tiny data)")
        kill = both_kill_drills(work / "kill-drill", log)

    nightly_rows = rows[1:]
    document = {
        "dataset": dataset,
        "date": now_iso(),
        "hardware": hardware(torch.get_num_threads()),
        "command": command,
        "protocol": "events sorted by time; the first base_share is the initial history (trained from scratch), the "
        "rest cut into equal nightly slices; each night the nightly job ingests its slice, fine-tunes from "
        "production, and is gated on that night's leave-one-out test (masked NDCG@10, full ranking)",
        "settings": {
            "nights": nights,
            "base_share": base_share,
            "preset": preset,
            "scratch_minutes": scratch_minutes,
            "warm_minutes": warm_minutes,
            "warm_epochs": recipe.warm_epochs,
            "warm_shrink": recipe.warm_shrink,
            "warm_lr_scale": recipe.warm_lr_scale,
            "warm_patience": recipe.warm_patience,
            "tolerance": cfg.tolerance,
        },
        "initial": rows[0],
        "nights": nightly_rows,
        "all_nights_completed": all(r["status"] in ("promoted", "refused") for r in nightly_rows),
        "warm_vs_scratch": comparison,
        # the acceptance: warm start within 2% of from-scratch NDCG@10 in at most half the time
        "warm_meets_acceptance": bool(
            comparison["ndcg10_ratio"] is not None
            and comparison["ndcg10_ratio"] >= 0.98
            and comparison["time_ratio"] is not None
            and comparison["time_ratio"] <= 0.5
        ),
        "converged_scratch_reference": converged_reference(
            dataset, comparison["warm_ndcg10"], comparison["scratch_ndcg10"], publish
        ),
        "gate_refused_worse": refused,
        "gate_drill": gate_drill,
        "kill_tests": kill,
    }
    target = pipeline.write_json(results_path("nightly-replay", publish, out), document)
    console.print(f"summary written to [bold]{target}[/]")
    return document


def _day(ts: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(int(ts)))
