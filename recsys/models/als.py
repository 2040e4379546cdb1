"""implicit ALS baseline (matrix factorisation on the binary user x item matrix).

Scoring a history folds the user in: the user factor is recomputed from the history items alone
(`recalculate_user`), so ALS answers for any history exactly like the sequential models do.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from implicit.cpu.als import AlternatingLeastSquares
from safetensors.numpy import load_file, save_file
from threadpoolctl import threadpool_limits

from recsys.data.sequences import HoldoutSet, Sequences
from recsys.models.base import Recommender, read_card

# Tried on the validation split by `recsys benchmark quality` (training/pipeline.py `select_als`): 12 fits of
# seconds each; iterations stay at the preset's. Validation preferred alpha 3 on MovieLens and 40 on Beauty,
# 128-256 factors on both (64 never won); regularization mattered little.
SEARCH_GRID: dict[str, list] = {"factors": [128, 256], "regularization": [0.1, 10.0], "alpha": [3.0, 10.0, 40.0]}


def _user_items(histories: Sequence[np.ndarray], n_items: int) -> sp.csr_matrix:
    """Binary user x item matrix (csr_matrix: implicit rejects csr_array)."""
    lengths = np.fromiter((len(h) for h in histories), dtype=np.int64, count=len(histories))
    rows = np.repeat(np.arange(len(histories)), lengths)
    cols = np.concatenate(histories) if len(histories) else np.zeros(0, dtype=np.int64)
    matrix = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(histories), n_items))
    matrix.data[:] = 1.0  # repeated items count once
    return matrix


class ALSRecommender(Recommender):
    kind = "als"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        alpha: float = 10.0,
        iterations: int = 15,
        seed: int = 0,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.n_items = 0
        self._als: AlternatingLeastSquares | None = None

    def _new_als(self) -> AlternatingLeastSquares:
        # implicit runs its own threads; a BLAS thread pool on top of them oversubscribes the cores (it
        # checks, and warns, when the model is constructed).
        with threadpool_limits(1, "blas"):
            return AlternatingLeastSquares(
                factors=self.factors,
                regularization=self.regularization,
                alpha=self.alpha,
                iterations=self.iterations,
                random_state=self.seed,
                calculate_training_loss=False,
            )

    def fit(self, train: Sequences, n_items: int, valid: HoldoutSet | None = None) -> ALSRecommender:
        self.n_items = n_items
        self._als = self._new_als()
        with threadpool_limits(1, "blas"):
            self._als.fit(_user_items(train.items, n_items), show_progress=False)
        return self

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        if self._als is None:
            raise RuntimeError("ALSRecommender is not fitted: call fit() or load() first")
        user_items = _user_items(histories, self.n_items)
        with threadpool_limits(1, "blas"):  # as in fit: BLAS threads under implicit's own are 10-60x slower
            user_factors = self._als.recalculate_user(np.arange(len(histories)), user_items)
        return (np.atleast_2d(user_factors) @ self._als.item_factors.T).astype(np.float32)

    @property
    def params(self) -> dict:
        return {
            "factors": self.factors,
            "regularization": self.regularization,
            "alpha": self.alpha,
            "iterations": self.iterations,
            "seed": self.seed,
        }

    def save(self, path: str | Path) -> None:
        if self._als is None:
            raise RuntimeError("nothing to save: the model is not fitted")
        path = Path(path)
        self._write_card(path, params=self.params, n_items=self.n_items)
        save_file({"item_factors": np.ascontiguousarray(self._als.item_factors)}, str(path / "factors.safetensors"))

    @classmethod
    def load(cls, path: str | Path) -> ALSRecommender:
        card = read_card(path)
        model = cls(**card["params"])
        model.n_items = card["n_items"]
        model._als = model._new_als()
        model._als.item_factors = load_file(str(Path(path) / "factors.safetensors"))["item_factors"]
        return model
