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


MAX_K = 1000  # the most items one request may ask for


def check_k(k: int, n_items: int) -> int:
    """k must be an integer in 1..MAX_K; it is capped at the catalogue size."""
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1 or k > MAX_K:
        raise ValueError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    return min(int(k), n_items)


def removals(
    histories: Sequence[np.ndarray], exclude_seen: bool, exclude: Sequence[Sequence[int]] | None
) -> list[np.ndarray]:
    """Per history, the item indices to leave out of its recommendations: its own items (when exclude_seen)
    and the caller's `exclude` row."""
    out = []
    for row, history in enumerate(histories):
        parts = [np.asarray(history, dtype=np.int64)] if exclude_seen else []
        if exclude is not None:
            parts.append(np.asarray(exclude[row], dtype=np.int64))
        out.append(np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64))
    return out


class Scorer(ABC):
    """Anything that scores every item for a user history."""

    n_items: int

    @abstractmethod
    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Scores, shape (len(histories), n_items), float32; higher is better."""

    def recommend(
        self,
        histories: Sequence[np.ndarray],
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Sequence[Sequence[int]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and their scores per history, best first. Seen items are left out by default,
        and so are the items of `exclude` (one row per history); rows that run short end in -1 / -inf."""
        k = check_k(k, self.n_items)
        scores = np.array(self.score(histories), dtype=np.float32)
        for row, remove in enumerate(removals(histories, exclude_seen, exclude)):
            scores[row, remove] = -np.inf
        items = top_k(scores, k)
        top_scores = np.take_along_axis(scores, items, axis=1)
        return np.where(np.isneginf(top_scores), -1, items), top_scores


class EmbeddingScorer(Scorer):
    """A scorer whose item score is user vector · item vector (the LM, an ensemble of LMs, a bundle).

    So an inner-product index over `item_vectors()` returns exactly the top-k of `score()`.
    """

    @abstractmethod
    def user_vectors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Shape (len(histories), dim), float32."""

    @abstractmethod
    def item_vectors(self) -> np.ndarray:
        """Shape (n_items, dim), float32."""

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return self.user_vectors(histories) @ self.item_vectors().T

    def unit_item_vectors(self) -> np.ndarray:
        vectors = self.item_vectors()
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def similar_items(self, item: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """The k items closest to `item` by cosine similarity of the item vectors, never the item itself.

        Cosine rather than the inner product: raw inner products favour items with large norms (the popular
        ones) for every query item, which is right for a user vector but not for "more like this".
        """
        if not 0 <= item < self.n_items:
            raise IndexError(f"item index {item} is outside 0..{self.n_items - 1}")
        k = min(check_k(k, self.n_items), self.n_items - 1)
        unit = self.unit_item_vectors()
        sims = unit @ unit[item]
        sims[item] = -np.inf
        top = top_k(sims[None, :], k)[0] if k > 0 else np.zeros(0, dtype=np.int64)
        return top, sims[top]


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
