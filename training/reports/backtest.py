"""The back-test: every number of the report, as `Findings`.

Holdout numbers follow the evaluation protocol's test split (each user's last event held out, history items
masked, full ranking): quality vs baselines, calibration, hit rate by activity and popularity, bias audit.
Forward numbers (coverage, cold start, activity outlook) use the predictions; trends come from trends.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.progress import Progress

from recsys.evaluate import evaluate
from recsys.metrics import ranking_metrics, target_ranks, top_k
from recsys.models.als import ALSRecommender
from recsys.models.popularity import PopularityRecommender
from training.reports.activity import ActivityModel, activity_features, activity_labels, reliability
from training.reports.audit import bias_audit
from training.reports.data import ReportData
from training.reports.predictions import Forward, masked_softmax, score_batches
from training.reports.trends import night_history, rising

LM = "generative LM (this bundle)"  # the bundle's row in the quality table


@dataclass
class HoldoutScores:
    """The bundle on the holdout: rank of each held-out item, and each user's top-k with probabilities."""

    ranks: np.ndarray
    top: np.ndarray  # (users, k) item indices
    p_top: np.ndarray  # (users, k) their probabilities
    hit: np.ndarray  # (users, k) whether each is the held-out item

    @property
    def hits10(self) -> np.ndarray:
        return self.ranks <= 10

    @property
    def ndcg10(self) -> np.ndarray:
        return np.where(self.hits10, 1.0 / np.log2(self.ranks + 1.0), 0.0)


@dataclass
class Findings:
    k: int
    period_days: float
    forward_users: int
    quality: dict[str, dict[str, float]]  # LM first, then each baseline
    best_baseline: str | None
    nights: list[dict[str, Any]]
    calibration: dict[str, Any]  # bins (reliability of the top-k probabilities), expected_hits, actual_hits
    activity: dict[str, Any] | None  # None without real timestamps
    p_active: dict[str, float]
    by_activity: dict[str, list] | None  # labels, hr, users per activity level; None without a holdout
    by_popularity: list[float] | None  # HR@10 per popularity decile of the held-out item
    exposure: dict[str, Any]  # interactions and recommendation shares per decile, coverage, gini
    rising: dict[str, Any]
    cold: dict[str, float]
    audits: list[dict[str, Any]]


def score_holdout(data: ReportData, batch_size: int, progress: Progress) -> HoldoutScores:
    holdout, k = data.holdout, data.k
    ranks, top_rows, p_top, hit_top = [], [], [], []
    batches = score_batches(data.engine, holdout.inputs, batch_size, progress, "backtest on the holdout")
    for start, scores, mask in batches:
        targets = holdout.targets[start : start + len(scores)]
        ranks.append(target_ranks(scores, targets, masked=mask))
        probs = masked_softmax(scores, mask)
        top = top_k(np.where(mask, -np.inf, scores), k)
        top_rows.append(top)
        p_top.append(np.take_along_axis(probs, top, axis=1))
        hit_top.append(top == targets[:, None])
    return HoldoutScores(
        ranks=np.concatenate(ranks) if ranks else np.zeros(0),
        top=np.concatenate(top_rows) if top_rows else np.zeros((0, k), dtype=np.int64),
        p_top=np.concatenate(p_top) if p_top else np.zeros((0, k)),
        hit=np.concatenate(hit_top) if hit_top else np.zeros((0, k), dtype=bool),
    )


def quality(data: ReportData, scores: HoldoutScores, baselines: list[str]) -> dict[str, dict[str, float]]:
    """Ranking metrics of the bundle and of each baseline, fitted on the training split, on the same holdout."""
    lm = ranking_metrics(scores.ranks)
    lm["coverage@10"] = len(np.unique(scores.top[:, :10])) / data.n_items if len(scores.top) else 0.0
    out = {LM: lm}
    for name in baselines:
        if name == "popularity":
            model = PopularityRecommender().fit(data.split.train, data.n_items)
        elif name == "als":
            model = ALSRecommender().fit(data.split.train, data.n_items)
        else:
            raise ValueError(f"unknown baseline {name!r}: popularity | als")
        out[name] = evaluate(model, data.holdout)["masked"] if len(data.holdout) else ranking_metrics(np.zeros(0))
    return out


def activity_outlook(data: ReportData, period_days: float) -> tuple[dict[str, Any] | None, dict[str, float]]:
    """Fit the activity model one period back, check it on the last period, refit there to predict the next.

    Returns its back-test numbers and each user's chance of activity in the next period (empty without
    real timestamps).
    """
    if not data.real_time:
        return None, {}
    events, period, t_max = data.events_lazy, period_days * 86_400, data.overview["t_max"]
    fit_at, check_at = t_max - 2 * period, t_max - period
    model = ActivityModel.fit(activity_features(events, fit_at, period), activity_labels(events, fit_at, period))
    check = activity_features(events, check_at, period)
    labels = activity_labels(events, check_at, period)
    predicted = model.predict(check)
    outcome = check.select(pl.col("user_id").is_in(labels.implode())).to_series().to_numpy()
    bins = reliability(predicted, outcome)
    final = ActivityModel.fit(check, labels)
    now = activity_features(events, t_max, period)
    p_active = dict(zip(now["user_id"].to_list(), final.predict(now).tolist(), strict=True))
    activity = {
        "period_days": period_days,
        "base_rate_backtest": float(outcome.mean()) if len(outcome) else 0.0,
        "mean_predicted_backtest": float(predicted.mean()) if len(predicted) else 0.0,
        "brier": float(np.mean((predicted - outcome) ** 2)) if len(outcome) else None,
        "ece": bins["ece"],
        "bins": bins,
        "expected_active_next_period": float(sum(p_active.get(u, 0.0) for u in data.forward_users)),
        "users_scored": len(now),
    }
    return activity, p_active


def calibration(scores: HoldoutScores) -> dict[str, Any]:
    """Reliability of every top-k probability against whether that item was the next event."""
    flat_p, flat_hit = scores.p_top.ravel(), scores.hit.ravel()
    return {
        "bins": reliability(flat_p, flat_hit.astype(np.float64), n_bins=10, log=True),
        "expected_hits": float(flat_p.sum()),
        "actual_hits": float(flat_hit.sum()),
    }


def deciles(counts: np.ndarray) -> np.ndarray:
    """Popularity decile of every item, 1 (least interacted with) .. 10 (most), by rank."""
    order = np.argsort(counts, kind="stable")
    out = np.empty(len(counts), dtype=np.int64)
    out[order] = 1 + (np.arange(len(counts)) * 10) // max(1, len(counts))
    return out


def activity_bins(lengths: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Up to five activity levels by history length (quintile edges; empty levels dropped), labelled lo–hi."""
    edges = np.unique(np.quantile(lengths, [0.2, 0.4, 0.6, 0.8]).round())
    raw = np.digitize(lengths, edges, right=True)
    used = np.unique(raw)
    bins = np.searchsorted(used, raw)
    labels = []
    for b in range(len(used)):
        members = lengths[bins == b]
        lo, hi = int(members.min()), int(members.max())
        labels.append(f"{lo}–{hi}" if lo < hi else f"{lo}")
    return bins, labels


def by_activity(data: ReportData, scores: HoldoutScores) -> dict[str, list]:
    bins, labels = activity_bins(np.array([len(h) for h in data.holdout.inputs]))
    hits10 = scores.hits10
    return {
        "labels": labels,
        "hr": [float(hits10[bins == b].mean()) if (bins == b).any() else 0.0 for b in range(len(labels))],
        "users": [int((bins == b).sum()) for b in range(len(labels))],
    }


def by_popularity(data: ReportData, scores: HoldoutScores) -> list[float]:
    target = deciles(data.train_counts)[data.holdout.targets]
    hits10 = scores.hits10
    return [float(hits10[target == d].mean()) if (target == d).any() else 0.0 for d in range(1, 11)]


def gini(counts: np.ndarray) -> float:
    values = np.sort(np.asarray(counts, dtype=np.float64))
    if values.sum() == 0:
        return 0.0
    n = len(values)
    return float((2 * np.arange(1, n + 1) - n - 1).dot(values) / (n * values.sum()))


def exposure(data: ReportData, forward: Forward) -> dict[str, Any]:
    """Where the forward top-k slots go by popularity decile, vs where the interactions are."""
    counts, slots, dec = data.train_counts, forward.slot_counts, deciles(data.train_counts)
    return {
        "interactions_share": [float(counts[dec == d].sum() / max(1, counts.sum())) for d in range(1, 11)],
        "recommendations_share": [float(slots[dec == d].sum() / max(1, slots.sum())) for d in range(1, 11)],
        "coverage": float((slots > 0).mean()),
        "gini": gini(slots),
    }


def cold_start(data: ReportData, forward: Forward) -> dict[str, float]:
    all_users, overview = data.overview["users"], data.overview
    short = sum(1 for s in data.sequences.items if len(s) < 3)
    slots = forward.slot_counts
    return {
        "users with no item the model knows (popularity fallback)": len(data.cold_users) / max(1, all_users),
        "users with fewer than 3 known events": short / max(1, all_users),
        "events on items the bundle does not know": overview["unknown_item_events"] / max(1, overview["events"]),
        "catalogue items with no training event": float((data.train_counts == 0).mean()),
        "recommendation slots on items with < 5 events": float(
            slots[data.train_counts < 5].sum() / max(1, slots.sum())
        ),
    }


def audits(data: ReportData, scores: HoldoutScores) -> list[dict[str, Any]]:
    if data.users_table is None or not len(data.holdout):
        return []
    counts, n_items = data.train_counts, data.n_items
    head = counts >= np.quantile(counts, 0.8)  # the most popular fifth of the catalogue
    popularity_pct = np.empty(n_items)
    popularity_pct[np.argsort(counts, kind="stable")] = np.arange(n_items) / max(1, n_items - 1)
    top10 = scores.top[:, :10]
    per_user = {
        "user_id": data.holdout.user_ids,
        "hit": scores.hits10.astype(np.float64),
        "ndcg": scores.ndcg10,
        "tail": (~head[top10]).mean(axis=1),
        "pop": popularity_pct[top10].mean(axis=1),
    }
    return bias_audit(data.users_table, per_user)


def run(
    data: ReportData,
    scores: HoldoutScores,
    forward: Forward,
    baselines: list[str],
    period_days: float,
    nightly_dir: Path | None,
) -> Findings:
    table = quality(data, scores, baselines)
    activity, p_active = activity_outlook(data, period_days)
    has_holdout = len(data.holdout) > 0
    return Findings(
        k=data.k,
        period_days=period_days,
        forward_users=len(data.forward_users),
        quality=table,
        best_baseline=max((n for n in table if n != LM), key=lambda n: table[n]["NDCG@10"], default=None),
        nights=night_history(nightly_dir),
        calibration=calibration(scores),
        activity=activity,
        p_active=p_active,
        by_activity=by_activity(data, scores) if has_holdout else None,
        by_popularity=by_popularity(data, scores) if has_holdout else None,
        exposure=exposure(data, forward),
        rising=rising(
            data.events_lazy,
            data.engine.catalogue,
            data.overview["t_max"],
            period_days * 86_400 if data.real_time else None,
        ),
        cold=cold_start(data, forward),
        audits=audits(data, scores),
    )
