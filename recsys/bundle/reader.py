"""The online engine: answers from a verified bundle with onnxruntime + FAISS. It never imports torch.

It implements the shared Scorer interface, so the same evaluator that scores the torch model can score the
exported bundle, and the service never special-cases a model.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import faiss
import numpy as np
import onnxruntime as ort
import polars as pl

from recsys import bundle
from recsys.bundle.adcopy import ADCOPY_DIR, AdCopyAssets
from recsys.data.vocab import ItemVocab
from recsys.index import ItemIndex
from recsys.models.base import Scorer
from recsys.tokens import left_pad

MAX_K = 1000


@dataclass
class Recommendations:
    user_id: str | None
    item_ids: list[str]
    scores: list[float]
    bundle_version: str
    fallback: bool = False  # True: popularity, because the user has no known history
    unknown_items: list[str] = field(default_factory=list)  # history items the bundle does not know, ignored
    fallback_reason: str | None = None  # "unknown_user" or "no_known_items" when fallback is True
    history_length: int = 0  # known history items the model read (after the cut to max_len)
    history_truncated: bool = False  # the known history was longer than max_len: only its tail was read


@dataclass
class Query:
    """One recommendation request at item-ID level: a history, who it is for, items to leave out."""

    history: Sequence[str]
    user_id: str | None = None
    exclude: Sequence[str] = ()
    fallback_reason: str = "no_known_items"  # what to report if no history item is known


class BundleRecommender(Scorer):
    def __init__(self, bundle_path: str | Path, threads: int = 1):
        self.path = bundle.resolve(bundle_path)
        self.manifest = bundle.verify(self.path)
        self.version: str = self.manifest["version"]
        self.created_at: str | None = self.manifest.get("created_at")
        # Live events received from this instant on are not in the bundle's histories (the service adds them).
        self.created_ts: float = _unix_seconds(self.created_at)
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
        has_adcopy = self.catalogue is not None and (self.path / ADCOPY_DIR).is_dir()
        self.adcopy: AdCopyAssets | None = AdCopyAssets(self.path, self.catalogue, threads) if has_adcopy else None
        self._unit_embeddings: np.ndarray | None = None  # for similar items, built on first use

    def titles(self, item_ids: Sequence[str]) -> dict[str, str]:
        """Catalogue titles of these items (empty when the bundle has no catalogue)."""
        if self.catalogue is None or "title" not in self.catalogue.columns:
            return {}
        rows = self.catalogue.filter(pl.col("item_id").is_in(list(item_ids))).select("item_id", "title")
        return dict(zip(rows["item_id"].to_list(), rows["title"].to_list(), strict=True))

    # -- the Scorer interface (dense item indices) ---------------------------------------------------------
    def user_vectors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        ids, mask = left_pad(histories, self.max_len, self.token_offset, self.pad_token_id)
        return self.session.run(["user_vector"], {"input_ids": ids, "attention_mask": mask})[0]

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        return self.user_vectors(histories) @ self._item_embeddings.T

    def recommend(
        self, histories: Sequence[np.ndarray], k: int = 10, exclude_seen: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS top-k; asks for k + len(history) rows so that k remain after removing seen items."""
        empty = np.zeros(0, dtype=np.int64)
        return self._search(histories, [h if exclude_seen else empty for h in histories], k)

    def _search(
        self, histories: Sequence[np.ndarray], removals: Sequence[np.ndarray], k: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows per history with each row's `removals` left out; -1 / -inf pad rows that run short."""
        k = check_k(k, self.n_items)
        vectors = self.user_vectors(histories)
        removals = [np.unique(np.asarray(r, dtype=np.int64)) for r in removals]
        extra = max((len(r) for r in removals), default=0)
        rows, scores = self.index.search(vectors, k + extra)
        out_items = np.full((len(histories), k), -1, dtype=np.int64)
        out_scores = np.full((len(histories), k), -np.inf, dtype=np.float32)
        for r, remove in enumerate(removals):
            keep = rows[r] >= 0
            if len(remove):
                keep &= ~np.isin(rows[r], remove)
            chosen_rows, chosen_scores = rows[r][keep][:k], scores[r][keep][:k]
            out_items[r, : len(chosen_rows)] = chosen_rows
            out_scores[r, : len(chosen_rows)] = chosen_scores
        return out_items, out_scores

    # -- item-ID level API, what the CLI and the service call ----------------------------------------------
    def recommend_for_history(
        self, item_ids: Sequence[str], k: int = 10, exclude_seen: bool = True, user_id: str | None = None
    ) -> Recommendations:
        return self.recommend_queries([Query(item_ids, user_id)], k, exclude_seen)[0]

    def recommend_for_user(
        self, user_id: str, k: int = 10, exclude_seen: bool = True, live: Sequence[str] = ()
    ) -> Recommendations:
        """A known user's recommendations from the bundle's history plus `live` items received since the bundle
        was built; users with neither get popular items, flagged."""
        return self.recommend_queries([self.user_query(user_id, live)], k, exclude_seen)[0]

    def user_query(self, user_id: str, live: Sequence[str] = (), session: Sequence[str] = ()) -> Query:
        """The history of a user: the bundle's, then live events, then the caller's session items."""
        stored = self.histories.get(str(user_id), ())
        history = [*stored, *live, *session] if live or session else stored
        return Query(
            history, str(user_id), fallback_reason="unknown_user" if not stored and not live else "no_known_items"
        )

    def recommend_queries(
        self, queries: Sequence[Query], k: int = 10, exclude_seen: bool = True
    ) -> list[Recommendations]:
        """Many requests in one ONNX run and one FAISS search; rows with no known item get the popularity fallback."""
        k = check_k(k, self.n_items)
        looked_up = [self.vocab.lookup(q.history) for q in queries]
        removals = []
        for query, (history, _) in zip(queries, looked_up, strict=True):
            excluded = self.vocab.lookup(query.exclude)[0] if query.exclude else history[:0]
            removals.append(np.concatenate([history, excluded]) if exclude_seen else excluded)
        personal = [r for r, (history, _) in enumerate(looked_up) if len(history)]
        results: list[Recommendations | None] = [None] * len(queries)
        if personal:
            items, scores = self._search([looked_up[r][0] for r in personal], [removals[r] for r in personal], k)
            for row, r in enumerate(personal):
                valid = items[row] >= 0
                n_known = len(looked_up[r][0])
                results[r] = Recommendations(
                    user_id=queries[r].user_id,
                    item_ids=[self.vocab.item_ids[i] for i in items[row][valid]],
                    scores=[float(s) for s in scores[row][valid]],
                    bundle_version=self.version,
                    unknown_items=looked_up[r][1],
                    history_length=min(n_known, self.max_len),
                    history_truncated=n_known > self.max_len,
                )
        for r, result in enumerate(results):
            if result is None:
                results[r] = self._popular(
                    k, queries[r].user_id, looked_up[r][1], removals[r], queries[r].fallback_reason
                )
        return results  # type: ignore[return-value]

    def _popular(
        self,
        k: int,
        user_id: str | None,
        unknown: list[str],
        exclude: np.ndarray | None,
        reason: str = "unknown_user",
    ) -> Recommendations:
        k = check_k(k, self.n_items)
        order = self.popular if exclude is None or not len(exclude) else self.popular[~np.isin(self.popular, exclude)]
        top = order[:k]
        return Recommendations(
            user_id=user_id,
            item_ids=[self.vocab.item_ids[i] for i in top],
            scores=[float(self.popularity[i]) for i in top],
            bundle_version=self.version,
            fallback=True,
            unknown_items=unknown,
            fallback_reason=reason,
        )

    def similar_items(self, item_id: str, k: int = 10) -> Recommendations:
        """Items closest to one item by cosine similarity of the same item embeddings the index holds.

        Cosine rather than the index's inner product: raw inner products favour items with large norms (the
        popular ones) for every query item, which is right for a user vector but not for "more like this".
        A brute-force pass over the normalised matrix costs what the flat index costs (one n_items x dim product).
        KeyError for an item the bundle does not know.
        """
        row = self.vocab.index_of(item_id)
        k = check_k(k, self.n_items)
        if self._unit_embeddings is None:
            norms = np.linalg.norm(self._item_embeddings, axis=1, keepdims=True)
            self._unit_embeddings = self._item_embeddings / np.maximum(norms, 1e-12)
        sims = self._unit_embeddings @ self._unit_embeddings[row]
        sims[row] = -np.inf  # never the item itself
        k = min(k, self.n_items - 1)
        top = np.argpartition(-sims, k - 1)[:k] if k > 0 else np.zeros(0, dtype=np.int64)
        top = top[np.argsort(-sims[top], kind="stable")]
        return Recommendations(
            user_id=None,
            item_ids=[self.vocab.item_ids[i] for i in top],
            scores=[float(sims[i]) for i in top],
            bundle_version=self.version,
        )

    def smoke_check(self) -> None:
        """One query through every part (ONNX, FAISS, popularity, histories) before the bundle takes traffic.

        Checksums prove the files are the ones exported; this proves they load and agree with each other
        (index dimension = encoder output, finite scores, k results), so a bad export never serves.
        """
        k = min(10, self.n_items)
        user = next(iter(self.histories), None)
        probe = [self.vocab.item_ids[int(self.popular[0])]] if self.n_items else []
        for result in (
            self.recommend_for_history(probe, k),
            self.recommend_for_user(user, k) if user is not None else None,
            self.recommend_for_history([], k),
        ):
            if result is None:
                continue
            if not result.item_ids or not np.all(np.isfinite(result.scores)):
                raise bundle.BundleError(f"bundle {self.version} failed its smoke query: no or non-finite scores")
        vector = self.user_vectors([np.asarray([0])])
        if vector.shape != (1, self.index.dim):
            raise bundle.BundleError(
                f"bundle {self.version} failed its smoke query: "
                f"encoder gives {vector.shape[1]} dims, index has {self.index.dim}"
            )


def _unix_seconds(iso: str | None) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp() if iso else 0.0
    except ValueError:
        return 0.0


def check_k(k: int, n_items: int) -> int:
    """k must be a positive integer no larger than MAX_K; it is capped at the catalogue size."""
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or k < 1 or k > MAX_K:
        raise ValueError(f"k must be an integer between 1 and {MAX_K}, got {k!r}")
    return min(int(k), n_items)
