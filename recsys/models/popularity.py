"""Most-popular baseline: every user gets the items ranked by training interaction count."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recsys.data.sequences import HoldoutSet, Sequences
from recsys.models.base import Recommender, read_card


class PopularityRecommender(Recommender):
    kind = "popularity"

    def __init__(self) -> None:
        self.counts = np.zeros(0, dtype=np.float32)
        self.n_items = 0

    def fit(self, train: Sequences, n_items: int, valid: HoldoutSet | None = None) -> PopularityRecommender:
        all_items = np.concatenate(train.items) if train.items else np.zeros(0, dtype=np.int64)
        self.counts = np.bincount(all_items, minlength=n_items).astype(np.float32)
        self.n_items = n_items
        return self

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(histories), self.n_items)).copy()

    def save(self, path: str | Path) -> None:
        self._write_card(Path(path), counts=self.counts.tolist())

    @classmethod
    def load(cls, path: str | Path) -> PopularityRecommender:
        model = cls()
        model.counts = np.asarray(read_card(path)["counts"], dtype=np.float32)
        model.n_items = len(model.counts)
        return model
