"""One evaluator for every model, under one protocol.

Full ranking over every catalogue item. Two variants, both always reported: `masked` (the headline) removes
the user's input-history items before ranking; `unmasked` keeps them rankable. Ties count against the model.
NaN and +inf scores are refused (`NonFiniteScores`): they would rank first and score a broken model as perfect.
"""

from __future__ import annotations

import numpy as np

from recsys.data.sequences import HoldoutSet
from recsys.metrics import (
    NonFiniteScores,
    ranking_metrics,
    require_finite_scores,
    rows_per_batch,
    target_ranks,
    top_k,
)
from recsys.models.base import Scorer

__all__ = ["METRIC_NAMES", "NonFiniteScores", "evaluate"]

METRIC_NAMES = ("HR@10", "NDCG@10", "HR@50", "NDCG@50", "HR@200", "NDCG@200", "MRR", "coverage@10")


def evaluate(model: Scorer, holdout: HoldoutSet, batch_size: int = 512) -> dict[str, dict[str, float]]:
    """{"masked": {...}, "unmasked": {...}} with HR/NDCG@10/50/200, MRR, coverage@10 and the user count.

    Raises NonFiniteScores (a ValueError) on the first batch with a NaN or +inf score.
    """
    n_items = model.n_items
    batch_size = rows_per_batch(n_items, batch_size)
    masked_ranks, unmasked_ranks = [], []
    masked_top: set[int] = set()
    unmasked_top: set[int] = set()
    for start in range(0, len(holdout), batch_size):
        inputs = holdout.inputs[start : start + batch_size]
        targets = holdout.targets[start : start + batch_size]
        scores = np.asarray(model.score(inputs), dtype=np.float32)
        require_finite_scores(scores, first_row=start)
        history_mask = np.zeros_like(scores, dtype=bool)
        rows = np.repeat(np.arange(len(inputs)), [len(h) for h in inputs])
        history_mask[rows, np.concatenate(inputs) if len(inputs) else []] = True
        unmasked_ranks.append(target_ranks(scores, targets))
        masked_ranks.append(target_ranks(scores, targets, masked=history_mask))
        unmasked_top.update(top_k(scores, 10).ravel().tolist())
        scores[history_mask] = -np.inf
        masked_top.update(top_k(scores, 10).ravel().tolist())
    result = {}
    for name, ranks, top in (
        ("masked", masked_ranks, masked_top),
        ("unmasked", unmasked_ranks, unmasked_top),
    ):
        metrics = ranking_metrics(np.concatenate(ranks) if ranks else np.zeros(0))
        metrics["coverage@10"] = len(top) / n_items if n_items else 0.0
        metrics["users"] = len(holdout)
        result[name] = metrics
    return result
