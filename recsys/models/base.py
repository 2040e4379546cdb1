"""The one recommender interface every model implements (popularity, ALS, the generative LM, a bundle).

Modelled on `implicit`: the evaluator, the reports and the service call only these methods, so they never
special-case a model. Histories and results are dense item indices (see recsys.data.vocab.ItemVocab).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.data.sequences import HoldoutSet, Sequences
from recsys.metrics import top_k

MODEL_CARD = "model.json"  # every saved model directory holds one: {"kind": ..., ...}


class Scorer(ABC):
    """Anything that scores every item for a user history."""

    n_items: int

    @abstractmethod
    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Scores, shape (len(histories), n_items), float32; higher is better."""

    def recommend(
        self, histories: Sequence[np.ndarray], k: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and their scores per history, best first; seen items removed by default."""
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        k = min(k, self.n_items)
        scores = self.score(histories)
        if exclude_seen:
            for row, history in enumerate(histories):
                scores[row, np.asarray(history, dtype=np.int64)] = -np.inf
        items = top_k(scores, k)
        return items, np.take_along_axis(scores, items, axis=1)


class Recommender(Scorer):
    """A trainable, persistable scorer."""

    kind: str

    @abstractmethod
    def fit(self, train: Sequences, n_items: int, valid: HoldoutSet | None = None) -> Recommender:
        """Learn from training sequences; `valid` is for early stopping where the model uses it."""

    @abstractmethod
    def save(self, path: str | Path) -> None:
        """Write the model to a directory (no pickles: JSON, safetensors)."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path) -> Recommender:
        """Read a model written by save()."""

    def _write_card(self, path: Path, **fields: Any) -> None:
        path.mkdir(parents=True, exist_ok=True)
        (path / MODEL_CARD).write_text(json.dumps({"kind": self.kind, **fields}, indent=2))


def read_card(path: str | Path) -> dict[str, Any]:
    card = Path(path) / MODEL_CARD
    if not card.exists():
        raise FileNotFoundError(f"{card} not found: {path} is not a saved model directory (run `recsys train`)")
    return json.loads(card.read_text())
