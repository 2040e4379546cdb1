"""The reader that answers from a verified bundle with onnxruntime + FAISS, never torch.

It implements the shared recommender interface, so the evaluator scores an exported bundle exactly as it
scores the torch model; the service, the CLI, the nightly gate and the reports all answer through it.
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
from recsys.bundle.adcopy import AdCopyAssets
from recsys.bundle.histories import StoredHistories
from recsys.bundle.layout import ADCOPY_DIR, CATALOGUE, ENCODER, HISTORIES, HISTORY_DIR, POPULARITY, EncoderSpec
from recsys.data.vocab import ItemVocab
from recsys.index import IndexParams, ItemIndex
from recsys.models.base import EmbeddingScorer, check_k, removals
from recsys.tokens import left_pad


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


class BundleRecommender(EmbeddingScorer):
    def __init__(self, bundle_path: str | Path, threads: int = 1):
        self.path = bundle.resolve(bundle_path)
        self.manifest = bundle.verify(self.path)
        self.version: str = self.manifest["version"]
        self.created_at: str | None = self.manifest.get("created_at")
        # Live events received from this instant on are not in the bundle's histories (the service adds them).
        self.created_ts: float = _unix_seconds(self.created_at)
        # what the nightly ingested from the service's event store ({"location", "store_id", "seq"}); live events
        # after it are not in this bundle's histories (None: a bundle built outside the nightly)
        self.events_watermark: dict | None = self.manifest.get("events_watermark")
        spec = EncoderSpec.from_manifest(self.manifest)
        self.max_len, self.token_offset, self.pad_token_id = spec.max_len, spec.token_offset, spec.pad_token_id
        # More threads hurt at batch 1 and fight the server's own workers for the cores.
        faiss.omp_set_num_threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(self.path / ENCODER), options, providers=["CPUExecutionProvider"])
        # the kind and its search parameters (efSearch / nprobe) as built; bundles without them: flat
        self.index = ItemIndex.load(self.path, IndexParams.from_manifest(self.manifest))
        self.vocab = ItemVocab(self.index.item_ids)
        self.n_items = len(self.vocab)
        self._item_embeddings = self.index.embeddings()
        # Memory-mapped: shared by every worker through the page cache, O(1) to open whatever the user count.
        history_dir = self.path / HISTORY_DIR
        self.histories = (
            StoredHistories.open(history_dir, self.vocab.item_ids)
            if history_dir.is_dir()
            else StoredHistories.from_frame(pl.read_parquet(self.path / HISTORIES), self.vocab.item_ids)
        )
        counts = np.asarray(json.loads((self.path / POPULARITY).read_text())["counts"], dtype=np.float32)
        self.popular = np.argsort(-counts, kind="stable")
        self.popularity = counts
        catalogue_path = self.path / CATALOGUE
        self.catalogue = pl.read_parquet(catalogue_path) if catalogue_path.exists() else None
        has_adcopy = self.catalogue is not None and (self.path / ADCOPY_DIR).is_dir()
        self.adcopy: AdCopyAssets | None = AdCopyAssets(self.path, self.catalogue, threads) if has_adcopy else None
        self._unit_item_vectors: np.ndarray | None = None  # for similar items, built on first use

    def titles(self, item_ids: Sequence[str]) -> dict[str, str]:
        """Catalogue titles of these items (empty when the bundle has no catalogue)."""
        if self.catalogue is None or "title" not in self.catalogue.columns:
            return {}
        rows = self.catalogue.filter(pl.col("item_id").is_in(list(item_ids))).select("item_id", "title")
        return dict(zip(rows["item_id"].to_list(), rows["title"].to_list(), strict=True))

    # -- the recommender interface (dense item indices) -----------------------------------------------------
    def user_vectors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        ids, mask = left_pad(histories, self.max_len, self.token_offset, self.pad_token_id)
        return self.session.run(["user_vector"], {"input_ids": ids, "attention_mask": mask})[0]

    def item_vectors(self) -> np.ndarray:
        return self._item_embeddings

    def unit_item_vectors(self) -> np.ndarray:
        if self._unit_item_vectors is None:  # the bundle never changes: normalise once
            self._unit_item_vectors = super().unit_item_vectors()
        return self._unit_item_vectors

    def recommend(
        self,
        histories: Sequence[np.ndarray],
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Sequence[Sequence[int]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The interface's top-k, from FAISS: asks for k + (items to leave out) rows so that k remain."""
        return self.recommend_vectors(self.user_vectors(histories), histories, k, exclude_seen, exclude)

    def recommend_vectors(
        self,
        vectors: np.ndarray,
        histories: Sequence[np.ndarray],
        k: int = 10,
        exclude_seen: bool = True,
        exclude: Sequence[Sequence[int]] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`recommend` for user vectors already computed from `histories` (a caller that needs them too)."""
        k = check_k(k, self.n_items)
        left_out = removals(histories, exclude_seen, exclude)
        extra = max((len(r) for r in left_out), default=0)
        rows, scores = self.index.search(vectors, k + extra)
        out_items = np.full((len(histories), k), -1, dtype=np.int64)
        out_scores = np.full((len(histories), k), -np.inf, dtype=np.float32)
        for r, remove in enumerate(left_out):
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
        histories = [history for history, _ in looked_up]
        excluded = [
            self.vocab.lookup(q.exclude)[0] if q.exclude else h[:0] for q, h in zip(queries, histories, strict=True)
        ]
        personal = [r for r, history in enumerate(histories) if len(history)]
        results: list[Recommendations | None] = [None] * len(queries)
        if personal:
            items, scores = self.recommend(
                [histories[r] for r in personal], k, exclude_seen, [excluded[r] for r in personal]
            )
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
                left_out = removals([histories[r]], exclude_seen, [excluded[r]])[0]
                results[r] = self._popular(k, queries[r].user_id, looked_up[r][1], left_out, queries[r].fallback_reason)
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

    def similar_to(self, item_id: str, k: int = 10) -> Recommendations:
        """`similar_items` at item-ID level; KeyError for an item the bundle does not know."""
        items, sims = self.similar_items(self.vocab.index_of(item_id), k)
        return Recommendations(
            user_id=None,
            item_ids=[self.vocab.item_ids[i] for i in items],
            scores=[float(s) for s in sims],
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
