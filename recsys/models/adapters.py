"""Scorers seen through another item vocabulary, or with items taken out.

The nightly gate compares yesterday's production bundle with today's candidate on today's holdout, whose
item indices come from today's (grown) vocabulary: `RemappedScorer` maps histories into the scorer's own
vocabulary by item ID and its scores back; items it does not know score -inf (it cannot recommend them,
and ties count against the model, so such a target is a miss). `ExcludingScorer` does the same for items
taken out of the catalogue.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recsys.data.vocab import ItemVocab
from recsys.models.base import Scorer


class RemappedScorer(Scorer):
    def __init__(self, scorer: Scorer, scorer_vocab: ItemVocab, target_vocab: ItemVocab):
        self.scorer = scorer
        self.n_items = len(target_vocab)
        # target index -> scorer index (-1: the scorer does not know the item)
        self.to_scorer = np.array([scorer_vocab._index.get(i, -1) for i in target_vocab.item_ids], dtype=np.int64)
        self.columns = np.flatnonzero(self.to_scorer >= 0)  # target columns the scorer can fill

    def map_histories(self, histories: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Histories in the target vocabulary as the scorer's item indices (items it does not know left out)."""
        mapped = []
        for history in histories:
            known = self.to_scorer[np.asarray(history, dtype=np.int64)]
            mapped.append(known[known >= 0])
        return mapped

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        inner = np.asarray(self.scorer.score(self.map_histories(histories)), dtype=np.float32)
        out = np.full((len(histories), self.n_items), -np.inf, dtype=np.float32)
        out[:, self.columns] = inner[:, self.to_scorer[self.columns]]
        return out


class ExcludingScorer(Scorer):
    def __init__(self, scorer: Scorer, excluded: Sequence[int]):
        self.scorer = scorer
        self.n_items = scorer.n_items
        self.excluded = np.asarray(excluded, dtype=np.int64)

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        scores = np.array(self.scorer.score(histories), dtype=np.float32)
        if len(self.excluded):
            scores[:, self.excluded] = -np.inf
        return scores
