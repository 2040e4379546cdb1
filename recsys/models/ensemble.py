"""An ensemble of scorers: the mean of their log-probabilities over the catalogue.

Log-softmax first, so that models whose raw scores live on different scales count equally (for the LM, the
log-softmax of its logits is its log-probability of each next item).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys.models.base import Scorer


def log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


class ScoreEnsemble(Scorer):
    def __init__(self, members: Sequence[Scorer]) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one member")
        sizes = {m.n_items for m in members}
        if len(sizes) != 1:
            raise ValueError(f"ensemble members score different catalogues: {sorted(sizes)} items")
        self.members = list(members)
        self.n_items = sizes.pop()

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        total = np.zeros((len(histories), self.n_items), dtype=np.float64)
        for member in self.members:
            total += log_softmax(np.asarray(member.score(histories), dtype=np.float64))
        return (total / len(self.members)).astype(np.float32)
