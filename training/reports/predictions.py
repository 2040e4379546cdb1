"""Scoring users with the bundle's ONNX encoder, and the forward predictions in predictions.parquet.

Per user: the top-k next items with scores and probabilities (a softmax over the items the user has not
had), the three likeliest categories of the next item, and the chance of activity in the next period.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from rich.progress import Progress

from recsys.bundle.reader import BundleRecommender
from recsys.durable import atomic_write
from recsys.metrics import top_k
from training.reports.data import ReportData

SCHEMA = {
    "user_id": pl.String,
    "fallback": pl.Boolean,
    "items": pl.List(pl.String),
    "scores": pl.List(pl.Float32),
    "probabilities": pl.List(pl.Float32),
    "top_categories": pl.List(pl.String),
    "category_probabilities": pl.List(pl.Float32),
    "p_active_next_period": pl.Float64,
    "history_length": pl.Int64,
}


def masked_softmax(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Probabilities over the items not masked (the ones the user has not had)."""
    scores = np.where(mask, -np.inf, scores)
    top = scores.max(axis=1, keepdims=True)
    exp = np.exp(scores - top)
    return exp / exp.sum(axis=1, keepdims=True)


def history_mask(histories: list[np.ndarray], n_items: int) -> np.ndarray:
    mask = np.zeros((len(histories), n_items), dtype=bool)
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    if len(rows):
        mask[rows, np.concatenate(histories)] = True
    return mask


def score_batches(
    engine: BundleRecommender, histories: list[np.ndarray], batch_size: int, progress: Progress, label: str
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(start, scores over every item, history mask) per batch of users, advancing a progress bar."""
    task = progress.add_task(label, total=len(histories))
    for start in range(0, len(histories), batch_size):
        batch = histories[start : start + batch_size]
        yield start, engine.score(batch), history_mask(batch, engine.n_items)
        progress.advance(task, len(batch))


@dataclass
class Forward:
    """The top-k after each forward user's whole history, and how often each item fills a slot."""

    items: list[list[str]] = field(default_factory=list)
    scores: list[list[float]] = field(default_factory=list)
    probabilities: list[list[float]] = field(default_factory=list)
    categories: list[list[str]] = field(default_factory=list)
    category_probabilities: list[list[float]] = field(default_factory=list)
    slot_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


def predict(data: ReportData, batch_size: int, progress: Progress) -> Forward:
    engine, k, names = data.engine, data.k, data.category_names
    out = Forward(slot_counts=np.zeros(data.n_items, dtype=np.int64))
    for _, scores, mask in score_batches(engine, data.forward_hist, batch_size, progress, "predictions"):
        probs = masked_softmax(scores, mask)
        top = top_k(np.where(mask, -np.inf, scores), k)
        np.add.at(out.slot_counts, top.ravel(), 1)
        out.items += [[engine.vocab.item_ids[i] for i in row] for row in top]
        out.scores += np.take_along_axis(scores, top, axis=1).astype(np.float32).tolist()
        out.probabilities += np.take_along_axis(probs, top, axis=1).astype(np.float32).tolist()
        if names:
            mass = probs @ data.category_matrix
            best = np.argsort(-mass, axis=1)[:, :3]
            out.categories += [[names[c] for c in row] for row in best]
            out.category_probabilities += np.take_along_axis(mass, best, axis=1).astype(np.float32).tolist()
    return out


def predictions_frame(data: ReportData, forward: Forward, p_active: dict[str, float]) -> pl.DataFrame:
    """Forward users, then cold users with the most popular items (flagged `fallback`)."""
    users, cold, counts = data.forward_users, data.cold_users, data.train_counts
    popular = np.argsort(-counts, kind="stable")[: data.k]
    share = (counts[popular] / max(1.0, counts.sum())).astype(np.float32).tolist()
    return pl.DataFrame(
        {
            "user_id": users + cold,
            "fallback": [False] * len(users) + [True] * len(cold),
            "items": forward.items + [[data.engine.vocab.item_ids[i] for i in popular]] * len(cold),
            "scores": forward.scores + [counts[popular].astype(np.float32).tolist()] * len(cold),
            "probabilities": forward.probabilities + [share] * len(cold),
            "top_categories": (forward.categories or [[]] * len(users)) + [[]] * len(cold),
            "category_probabilities": (forward.category_probabilities or [[]] * len(users)) + [[]] * len(cold),
            "p_active_next_period": [p_active.get(u) for u in users + cold] if data.real_time else None,
            "history_length": [len(h) for h in data.forward_hist] + [0] * len(cold),
        },
        schema=SCHEMA,
    )


def write_predictions(frame: pl.DataFrame, path: Path) -> Path:
    return atomic_write(path, frame.write_parquet)
