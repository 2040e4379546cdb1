"""The online engine: answers from a verified bundle with onnxruntime + FAISS. It never imports torch.

It implements the shared Scorer interface, so the same evaluator that scores the torch model can score the
exported bundle, and the service never special-cases a model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np
import onnxruntime as ort
import polars as pl

from recsys import bundle
from recsys.data.vocab import ItemVocab
from recsys.index import ItemIndex
from recsys.models.base import Scorer

MAX_K = 1000


@dataclass
class Recommendations:
    user_id: str | None
    item_ids: list[str]
    scores: list[float]
    bundle_version: str
    fallback: bool = False  # True: popularity, because the user has no known history
    unknown_items: list[str] = field(default_factory=list)  # history items the bundle does not know, ignored


class BundleRecommender(Scorer):
    def __init__(self, bundle_path: str | Path, threads: int = 1):
        self.path = bundle.resolve(bundle_path)
        self.manifest = bundle.verify(self.path)
        self.version: str = self.manifest["version"]
        model = self.manifest["model"]
        self.max_len: int = model["max_len"]
        self.token_offset: int = model["token_offset"]
        self.pad_token_id: int = model.get("pad_token_id", 0)
        # More threads hurt at batch 1 and fight the server's own workers (PITFALLS.md).
        faiss.omp_set_num_threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(self.path / "user_encoder.onnx"), options, providers=["CPUExecutionProvider"]
        )
        self.index = ItemIndex.load(self.path)
        self.vocab = ItemVocab(self.index.item_ids)
        self.n_items = len(self.vocab)
        self._item_embeddings = self.index.embeddings()
        histories = pl.read_parquet(self.path / "histories.parquet")
        self.histories: dict[str, list[str]] = dict(
            zip(histories["user_id"].to_list(), histories["item_ids"].to_list(), strict=True)
        )
        counts = np.asarray(json.loads((self.path / "popularity.json").read_text())["counts"], dtype=np.float32)
        self.popular = np.argsort(-counts, kind="stable")
        self.popularity = counts
        catalogue_path = self.path / "catalogue.parquet"
        self.catalogue = pl.read_parquet(catalogue_path) if catalogue_path.exists() else None

    def titles(self, item_ids: Sequence[str]) -> dict[str, str]:
        """Catalogue titles of these items (empty when the bundle has no catalogue)."""
        if self.catalogue is None or "title" not in self.catalogue.columns:
            return {}
        rows = self.catalogue.filter(pl.col("item_id").is_in(list(item_ids))).select("item_id", "title")
        return dict(zip(rows["item_id"].to_list(), rows["title"].to_list(), strict=True))

    # -- the Scorer interface (dense item indices) ---------------------------------------------------------
    def user_vectors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        cut = [np.asarray(h, dtype=np.int64)[-self.max_len :] for h in histories]
        width = max(1, max((len(h) for h in cut), default=1))
        ids = np.full((len(cut), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(cut), width), dtype=np.int64)
        for row, h in enumerate(cut):
            if len(h):
                ids[row, width - len(h) :] = h + self.token_offset
                mask[row, width - len(h) :] = 1
        return self.session.run(["user_vector"], {"input_ids": ids, "attention_mask": mask})[0]

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return self.user_vectors(histories) @ self._item_embeddings.T

    def recommend(
        self, histories: Sequence[np.ndarray], k: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS top-k; asks for k + len(history) rows so that k remain after removing seen items."""
        k = check_k(k, self.n_items)
        vectors = self.user_vectors(histories)
        extra = max((len(set(h.tolist())) for h in histories), default=0) if exclude_seen else 0
        rows, scores = self.index.search(vectors, k + extra)
        out_items = np.full((len(histories), k), -1, dtype=np.int64)
        out_scores = np.full((len(histories), k), -np.inf, dtype=np.float32)
        for r, history in enumerate(histories):
            keep = rows[r] >= 0
            if exclude_seen:
                keep &= ~np.isin(rows[r], history)
            chosen_rows, chosen_scores = rows[r][keep][:k], scores[r][keep][:k]
            out_items[r, : len(chosen_rows)] = chosen_rows
            out_scores[r, : len(chosen_rows)] = chosen_scores
        return out_items, out_scores

    # -- item-ID level API, what the CLI and the service call ----------------------------------------------
    def recommend_for_history(
        self, item_ids: Sequence[str], k: int = 10, exclude_seen: bool = True, user_id: str | None = None
    ) -> Recommendations:
        history, unknown = self.vocab.lookup(item_ids)
        if len(history) == 0:
            return self._popular(k, user_id, unknown, exclude=history if exclude_seen else None)
        items, scores = self.recommend([history], k, exclude_seen)
        valid = items[0] >= 0
        return Recommendations(
            user_id=user_id,
            item_ids=[self.vocab.item_ids[i] for i in items[0][valid]],
            scores=[float(s) for s in scores[0][valid]],
            bundle_version=self.version,
            unknown_items=unknown,
        )

    def recommend_for_user(self, user_id: str, k: int = 10, exclude_seen: bool = True) -> Recommendations:
        """A known user's recommendations from the bundle's history; unknown users get popular items, flagged."""
        history = self.histories.get(str(user_id))
        if history is None:
            check_k(k, self.n_items)
            return self._popular(k, str(user_id), [], exclude=None)
        return self.recommend_for_history(history, k, exclude_seen, user_id=str(user_id))

    def _popular(self, k: int, user_id: str | None, unknown: list[str], exclude: np.ndarray | None):
        k = check_k(k, self.n_items)
        order = self.popular if exclude is None else self.popular[~np.isin(self.popular, exclude)]
        top = order[:k]
        return Recommendations(
            user_id=user_id,
            item_ids=[self.vocab.item_ids[i] for i in top],
            scores=[float(self.popularity[i]) for i in top],
            bundle_version=self.version,
            fallback=True,
            unknown_items=unknown,
        )


def check_k(k: int, n_items: int) -> int:
    """k must be a positive integer no larger than MAX_K; it is capped at the catalogue size."""
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1 or k > MAX_K:
        raise ValueError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    return min(int(k), n_items)
