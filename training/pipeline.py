"""The batch path, step by step: prepare data -> fit models -> evaluate -> export a bundle.

`recsys demo` and `recsys benchmark quality` are both sequences of these steps, so they cannot drift apart.
"""

from __future__ import annotations

import itertools
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from recsys.bundle import sha256_of
from recsys.data.importers import read_dataset
from recsys.data.prepared import Prepared, load_prepared, write_prepared
from recsys.data.sequences import LeaveOneOut, build_sequences, leave_one_out  # noqa: F401 (re-export)
from recsys.data.validate import validate
from recsys.durable import atomic_write_json
from recsys.evaluate import evaluate
from recsys.models.als import SEARCH_GRID, ALSRecommender
from recsys.models.base import Recommender
from recsys.models.popularity import PopularityRecommender
from recsys.runinfo import hardware, now_iso
from training.lm.ensemble import EnsembleRecommender
from training.lm.model import GenerativeRecommender
from training.presets import Preset

MODEL_KINDS = ("popularity", "als", "lm")


def prepare(
    path: str | Path,
    fmt: str,
    out_dir: str | Path,
    catalogue_path: str | Path | None = None,
    max_reject_rate: float = 0.05,
) -> Prepared:
    """Read -> validate (rejects kept with reasons) -> write the prepared dataset -> load it back."""
    validated = validate(read_dataset(path, fmt, catalogue_path=catalogue_path), max_reject_rate=max_reject_rate)
    write_prepared(validated, out_dir)
    return load_prepared(out_dir)


def data_snapshot(dataset_dir: str | Path) -> dict[str, Any]:
    """What a bundle was built from: the prepared dataset's path, summary and the events file's sha256."""
    dataset_dir = Path(dataset_dir)
    summary = json.loads((dataset_dir / "summary.json").read_text())
    return {
        "path": str(dataset_dir.resolve()),
        "events_sha256": sha256_of(dataset_dir / "events.parquet"),
        "events": summary.get("accepted"),
        "rejected": summary.get("rejected"),
        "users": summary.get("users"),
        "items": summary.get("items"),
    }


def split(prepared: Prepared, max_len: int) -> LeaveOneOut:
    return leave_one_out(build_sequences(prepared.events, prepared.vocab), max_len)


def new_model(kind: str, preset: Preset, base_model: str | Path | None = None) -> Recommender:
    if kind == "popularity":
        return PopularityRecommender()
    if kind == "als":
        return ALSRecommender(**preset.als, seed=preset.train.seed)
    if kind == "lm" and preset.members:
        if base_model is not None:
            raise ValueError(f"preset {preset.name!r} is an ensemble, trained from scratch: drop the base model")
        return EnsembleRecommender(preset.members)
    if kind == "lm":
        return GenerativeRecommender(preset.lm, preset.train, base_model=base_model)
    raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(MODEL_KINDS)}")


def load_model(path: str | Path) -> Recommender:
    from recsys.models.base import read_card

    kind = read_card(path)["kind"]
    cls = {
        "popularity": PopularityRecommender,
        "als": ALSRecommender,
        "lm": GenerativeRecommender,
        "lm-ensemble": EnsembleRecommender,
    }[kind]
    return cls.load(path)


def fit(model: Recommender, data: LeaveOneOut, prepared: Prepared, refit_with_valid: bool = False) -> dict[str, Any]:
    """Fit on the training part of the split; returns wall time, tokens/s and size.

    With `refit_with_valid`, the LM is trained a second time, from scratch, for the epoch count that early
    stopping chose, on the training part plus each user's validation event (never the test event); the
    refitted weights are what gets evaluated on test and exported. Validation metrics then no longer
    measure a held-out event, so the first fit's are returned as `valid_metrics` (see `evaluate_splits`).
    The LM reads the flag from its own train config; for the baselines the caller passes the preset's
    (`refit_with_valid` argument), so they are refit on the same data whenever the LM is.
    """
    started = time.perf_counter()
    if isinstance(model, EnsembleRecommender):
        model.fit(data.train, len(prepared.vocab), data.valid, vocab=prepared.vocab)
        return dict(model.stats)
    if not isinstance(model, GenerativeRecommender):
        model.fit(data.train, len(prepared.vocab), data.valid)
        if not refit_with_valid:
            return {"train_wall_s": round(time.perf_counter() - started, 1)}
        first_fit_valid = evaluate(model, data.valid)["masked"]
        model.fit(data.train_with_valid, len(prepared.vocab), None)
        wall = round(time.perf_counter() - started, 1)
        return {"train_wall_s": wall, "refit_with_valid": True, "valid_metrics": first_fit_valid}
    if model.train_config.refit_with_valid and model.train_config.selected_epochs:
        epochs = model.train_config.selected_epochs
        model.train_config = replace(model.train_config, epochs=epochs, max_minutes=0.0)
        model.fit(data.train_with_valid, len(prepared.vocab), None, vocab=prepared.vocab)
        return {
            **model.stats,
            "best_epoch": epochs,
            "selection": "epochs given by the preset (selected_epochs)",
            "refit_with_valid": True,
        }
    model.fit(data.train, len(prepared.vocab), data.valid, vocab=prepared.vocab)
    stats = dict(model.stats)
    if model.train_config.refit_with_valid:
        selection = {k: stats[k] for k in ("best_epoch", "best_valid_NDCG@10", "train_wall_s")}
        first_fit_valid = evaluate(model, data.valid)["masked"]
        refit_config = replace(model.train_config, epochs=stats["best_epoch"], max_minutes=0.0)
        model.train_config, model.lm, model.history = refit_config, None, []
        model.fit(data.train_with_valid, len(prepared.vocab), None, vocab=prepared.vocab)
        stats = {
            **model.stats,
            "selection": selection,
            "train_wall_s": round(time.perf_counter() - started, 1),
            "best_epoch": selection["best_epoch"],
            "best_valid_NDCG@10": selection["best_valid_NDCG@10"],
            "refit_with_valid": True,
            "valid_metrics": first_fit_valid,
        }
        model.stats = stats
    return stats


def evaluate_splits(
    model: Recommender, data: LeaveOneOut, valid: dict | None = None, refit: bool = False
) -> dict[str, Any]:
    """The contract's shape: test (masked, the headline), test_unmasked, valid (masked).

    `valid` is the selection fit's figure when there was one. After a refit on train + valid (`refit`), the
    model has trained on the validation events, so its own figure on them is kept apart, under
    `valid_refit_not_held_out`; `valid` stays the selection fit's (None when the preset gave the epochs).
    """
    test = evaluate(model, data.test)
    splits = {"test": test["masked"], "test_unmasked": test["unmasked"]}
    if refit:
        return {**splits, "valid": valid, "valid_refit_not_held_out": evaluate(model, data.valid)["masked"]}
    return {**splits, "valid": valid if valid is not None else evaluate(model, data.valid)["masked"]}


def select_als(
    preset: Preset, data: LeaveOneOut, prepared: Prepared, grid: dict[str, list] = SEARCH_GRID
) -> dict[str, Any]:
    """ALS parameters chosen like the LM's epochs: fitted on the training part for every combination in `grid`
    (the rest from the preset), kept by NDCG@10 (masked) on the validation users the LM's early stopping uses;
    the first of equals in grid order wins."""
    valid = data.valid.subset(preset.train.max_valid_users, seed=preset.train.seed)
    trials = []
    for values in itertools.product(*grid.values()):
        params = {**preset.als, **dict(zip(grid, values, strict=True))}
        model = ALSRecommender(**params, seed=preset.train.seed).fit(data.train, len(prepared.vocab))
        trials.append({**params, "valid_NDCG@10": evaluate(model, valid)["masked"]["NDCG@10"]})
    best = max(trials, key=lambda trial: trial["valid_NDCG@10"])
    return {
        "metric": f"NDCG@10 (masked) of a fit on train, on {len(valid)} validation users (the LM's selection set)",
        "grid": grid,
        "chosen": {k: v for k, v in best.items() if k != "valid_NDCG@10"},
        "trials": trials,
    }


def results_document(dataset: str, command: str, models: dict[str, Any], extra: dict | None = None) -> dict:
    return {
        "dataset": dataset,
        "protocol": "leave-one-out, full ranking over all items, ties against the model; test = masked "
        "(history items removed, the headline), test_unmasked = history items rankable",
        "date": now_iso(),
        "hardware": hardware(torch.get_num_threads()),
        "command": command,
        **(extra or {}),
        "models": models,
    }


def write_json(path: str | Path, payload: dict) -> Path:
    return atomic_write_json(path, payload)
