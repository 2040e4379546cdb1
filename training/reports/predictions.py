"""Scoring users with the bundle's ONNX encoder, and the forward predictions in predictions.parquet.

Per user: the top-k next items with scores and probabilities (a softmax over the items the user has not
had), the three likeliest categories of the next item, and the chance of activity in the next period.

Two ways to score, chosen by the bundle's index: an exact index (small catalogues) scores every item for every
user; an approximate one (large catalogues, where users x items is out of reach) takes each user's candidates
from the index, as the service does, and estimates the rest of the softmax from a uniform sample of items.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from rich.progress import Progress
from scipy import sparse

from recsys.bundle.reader import BundleRecommender
from recsys.durable import atomic_write
from recsys.metrics import rows_per_batch, top_k
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
    batch_size = rows_per_batch(engine.n_items, batch_size)
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
    method: str = "exact"  # "exact": every item scored; "candidates": see predict_from_candidates

    def add(self, data: ReportData, top: np.ndarray, scores: np.ndarray, probs: np.ndarray, mass: np.ndarray) -> None:
        """One batch: top (users, k) item indices (-1: none), their scores and probabilities, category mass."""
        names, item_ids = data.category_names, data.engine.vocab.item_ids
        valid = top >= 0
        np.add.at(self.slot_counts, top[valid], 1)
        self.items += [[item_ids[i] for i in row[ok]] for row, ok in zip(top, valid, strict=True)]
        self.scores += [row[ok].tolist() for row, ok in zip(scores.astype(np.float32), valid, strict=True)]
        self.probabilities += [row[ok].tolist() for row, ok in zip(probs.astype(np.float32), valid, strict=True)]
        if names:
            best = np.argsort(-mass, axis=1)[:, :3]
            self.categories += [[names[c] for c in row] for row in best]
            self.category_probabilities += np.take_along_axis(mass, best, axis=1).astype(np.float32).tolist()


def predict(data: ReportData, batch_size: int, progress: Progress) -> Forward:
    if data.engine.index.params.approximate:
        return predict_from_candidates(data, batch_size, progress)
    engine, k = data.engine, data.k
    out = Forward(slot_counts=np.zeros(data.n_items, dtype=np.int64))
    for _, scores, mask in score_batches(engine, data.forward_hist, batch_size, progress, "predictions"):
        probs = masked_softmax(scores, mask)
        top = top_k(np.where(mask, -np.inf, scores), k)
        mass = np.asarray((data.category_matrix.T @ probs.T).T)  # sparse @ dense: (users, categories)
        top_scores = np.take_along_axis(scores, top, axis=1)
        out.add(data, top, top_scores, np.take_along_axis(probs, top, axis=1), mass)
    return out


CANDIDATES = 100  # items per user taken from the index and scored exactly (the top k of them are the predictions)
TAIL_SAMPLE = 1024  # items drawn uniformly per batch to estimate the softmax mass of all the others


def predict_from_candidates(data: ReportData, batch_size: int, progress: Progress, seed: int = 0) -> Forward:
    """Predictions for a catalogue behind an approximate index, in time linear in the users.

    Each user's top CANDIDATES unseen items come from the index (exactly rescored, as the service serves them).
    The softmax's normaliser and each category's mass are the candidates' exact share plus the rest of the
    catalogue estimated from TAIL_SAMPLE items drawn uniformly (scaled by how many items they stand for: an
    unbiased estimate). When the sample covers every other item the result is exact.
    """
    engine, k, histories = data.engine, data.k, data.forward_hist
    n_items, item_vectors = engine.n_items, engine.item_vectors()
    n_candidates = min(max(CANDIDATES, k), n_items)
    rng = np.random.default_rng(seed)
    out = Forward(slot_counts=np.zeros(n_items, dtype=np.int64), method="candidates")
    task = progress.add_task("predictions (index candidates)", total=len(histories))
    for start in range(0, len(histories), batch_size):
        batch = histories[start : start + batch_size]
        vectors = engine.user_vectors(batch)
        candidates, candidate_scores = engine.recommend_vectors(vectors, batch, n_candidates)
        sample = rng.choice(n_items, size=min(TAIL_SAMPLE, n_items), replace=False)
        sample_scores = vectors @ item_vectors[sample].T
        # shift by each row's best score so that exp() cannot overflow (the ratios are what matter)
        shift = np.maximum(candidate_scores[:, :1], sample_scores.max(axis=1, keepdims=True))
        candidate_weight = np.exp(candidate_scores - shift)  # padding (-inf) weighs 0
        sample_weight = np.exp(sample_scores - shift)
        for row, history in enumerate(batch):
            taken = np.union1d(candidates[row][candidates[row] >= 0], history)
            others = ~np.isin(sample, taken)  # drawn items neither seen nor among the candidates
            drawn = int(others.sum())
            sample_weight[row] = np.where(others, sample_weight[row] * (n_items - len(taken)) / max(drawn, 1), 0.0)
        total = candidate_weight.sum(axis=1, keepdims=True) + sample_weight.sum(axis=1, keepdims=True)
        rows = np.arange(len(batch))
        weights = sparse.csr_matrix(
            (
                np.concatenate([(candidate_weight / total).ravel(), (sample_weight / total).ravel()]),
                (
                    np.concatenate([np.repeat(rows, n_candidates), np.repeat(rows, len(sample))]),
                    np.concatenate([np.maximum(candidates, 0).ravel(), np.tile(sample, len(batch))]),
                ),
            ),
            shape=(len(batch), n_items),
        )  # each user's estimated probability of each item it scored
        mass = (weights @ data.category_matrix).toarray()
        out.add(data, candidates[:, :k], candidate_scores[:, :k], (candidate_weight / total)[:, :k], mass)
        progress.advance(task, len(batch))
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
