"""Will a user be active in the next period? A small logistic model of recency and frequency, and calibration.

The generative model predicts which item comes next, not when. Features of each history up to a cutoff
(recency, recent and total event counts, tenure; polars lazy aggregations) predict at least one event in
the period after it; fitted by IRLS with a small ridge, in numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

FEATURES = ("log_recency_days", "log_events_last_period", "log_events_last_4_periods", "log_events", "log_tenure_days")


def activity_features(events: pl.LazyFrame, cutoff: float, period: float) -> pl.DataFrame:
    """One row per user with events up to `cutoff`: user_id and FEATURES."""
    day = 86_400.0
    ts = pl.col("timestamp")
    return (
        events.filter(ts <= cutoff)
        .group_by("user_id")
        .agg(
            ((cutoff - ts.max()) / day).log1p().alias("log_recency_days"),
            (ts > cutoff - period).sum().cast(pl.Float64).log1p().alias("log_events_last_period"),
            (ts > cutoff - 4 * period).sum().cast(pl.Float64).log1p().alias("log_events_last_4_periods"),
            pl.len().cast(pl.Float64).log1p().alias("log_events"),
            ((cutoff - ts.min()) / day).log1p().alias("log_tenure_days"),
        )
        .sort("user_id")
        .collect()
    )


def activity_labels(events: pl.LazyFrame, cutoff: float, period: float) -> pl.Series:
    """The users with at least one event in (cutoff, cutoff + period]."""
    ts = pl.col("timestamp")
    return events.filter((ts > cutoff) & (ts <= cutoff + period)).select("user_id").unique().collect().to_series()


@dataclass
class ActivityModel:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # bias first
    constant: float | None = None  # when the training labels were all one class

    @classmethod
    def fit(cls, features: pl.DataFrame, active: pl.Series, l2: float = 1.0, iterations: int = 30) -> ActivityModel:
        x = features.select(FEATURES).to_numpy().astype(np.float64)
        y = features["user_id"].is_in(active.implode()).to_numpy().astype(np.float64)
        mean, scale = x.mean(axis=0) if len(x) else np.zeros(len(FEATURES)), x.std(axis=0) if len(x) else None
        scale = np.where(scale > 0, scale, 1.0) if scale is not None else np.ones(len(FEATURES))
        if len(y) == 0 or y.min() == y.max():
            return cls(mean, scale, np.zeros(len(FEATURES) + 1), float(y.mean()) if len(y) else 0.0)
        design = np.column_stack([np.ones(len(x)), (x - mean) / scale])
        w = np.zeros(design.shape[1])
        ridge = l2 * np.eye(design.shape[1])
        ridge[0, 0] = 0.0  # the bias is not shrunk
        for _ in range(iterations):
            p = 1.0 / (1.0 + np.exp(-design @ w))
            hessian = design.T @ (design * (p * (1 - p))[:, None]) + ridge
            step = np.linalg.solve(hessian, design.T @ (p - y) + ridge @ w)
            w -= step
            if np.abs(step).max() < 1e-8:
                break
        return cls(mean, scale, w)

    def predict(self, features: pl.DataFrame) -> np.ndarray:
        if self.constant is not None:
            return np.full(features.height, self.constant)
        x = (features.select(FEATURES).to_numpy().astype(np.float64) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(self.weights[0] + x @ self.weights[1:])))


def reliability(predicted: np.ndarray, outcome: np.ndarray, n_bins: int = 10, log: bool = False) -> dict:
    """Equal-count bins of predicted probability: mean predicted, observed frequency, count; and the ECE.

    Equal-count bins keep every point meaningful when most predictions are tiny (next-item probabilities);
    `log` only matters for reading, the binning is by rank either way.
    """
    predicted, outcome = np.asarray(predicted, dtype=np.float64), np.asarray(outcome, dtype=np.float64)
    if len(predicted) == 0:
        return {"predicted": [], "observed": [], "counts": [], "ece": 0.0}
    order = np.argsort(predicted, kind="stable")
    chunks = [c for c in np.array_split(order, min(n_bins, len(order))) if len(c)]
    mean_p = [float(predicted[c].mean()) for c in chunks]
    observed = [float(outcome[c].mean()) for c in chunks]
    counts = [len(c) for c in chunks]
    ece = float(sum(n * abs(p - o) for p, o, n in zip(mean_p, observed, counts, strict=True)) / len(predicted))
    return {"predicted": mean_p, "observed": observed, "counts": counts, "ece": ece, "log": log}
