"""Ranking metrics of the evaluation protocol: full ranking, ties count against the model."""

from __future__ import annotations

import numpy as np

CUTOFFS = (10, 50, 200)
# users x items scored densely at once: 64 MB of float32 whatever the catalogue (512 users x 1M items is 2 GB)
MAX_SCORE_CELLS = 2**24


def rows_per_batch(n_items: int, wanted: int) -> int:
    """At most `wanted` users per dense scoring batch: fewer for a large catalogue, so that a batch stays small."""
    return max(1, min(wanted, MAX_SCORE_CELLS // max(n_items, 1)))


class NonFiniteScores(ValueError):
    """A scorer returned NaN or +inf: such scores would rank first and make a broken model look perfect."""


def require_finite_scores(scores: np.ndarray, first_row: int = 0) -> None:
    """Refuse NaN and +inf scores; -inf is allowed (a scorer's way to say it cannot recommend an item)."""
    bad = np.isnan(scores) | np.isposinf(scores)
    if not bad.any():
        return
    rows = int(bad.any(axis=1).sum())
    raise NonFiniteScores(
        f"{rows} of the {len(scores)} users at holdout rows {first_row}..{first_row + len(scores) - 1} got NaN "
        f"or +inf scores ({int(bad.sum())} of {bad.size} scores): the model diverged or its scorer is broken. "
        "Retrain it (for example with a lower learning rate, or in fp32) or fix the scorer; a scorer that cannot "
        "recommend an item should give it -inf."
    )


def target_ranks(scores: np.ndarray, targets: np.ndarray, masked: np.ndarray | None = None) -> np.ndarray:
    """1 + the number of other rankable items scored at least as high as the target.

    Ties count against the model: a model that scores many items equally, like popularity on
    its long tail or a constant scorer, gets the pessimistic rank, never a lucky one.

    `masked` (same shape as scores, bool) marks items removed before ranking; a masked target is a miss
    (rank = infinity), which is what happens to repeat consumption under the masked protocol.
    """
    scores = np.asarray(scores, dtype=np.float32)
    rows = np.arange(len(targets))
    target_scores = scores[rows, targets]
    at_least = scores >= target_scores[:, None]
    at_least[rows, targets] = False
    if masked is not None:
        at_least &= ~masked
    ranks = 1.0 + at_least.sum(axis=1).astype(np.float64)
    if masked is not None:
        ranks[masked[rows, targets]] = np.inf
    return ranks


def ranking_metrics(ranks: np.ndarray, cutoffs: tuple[int, ...] = CUTOFFS) -> dict[str, float]:
    """HR@K (= Recall@K with one target), NDCG@K and MRR from target ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    out: dict[str, float] = {}
    for k in cutoffs:
        hit = ranks <= k
        out[f"HR@{k}"] = float(hit.mean()) if len(ranks) else 0.0
        out[f"NDCG@{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean()) if len(ranks) else 0.0
    out["MRR"] = float((1.0 / ranks).mean()) if len(ranks) else 0.0
    return out


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores per row, best first (argpartition, then a sort of k)."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)
