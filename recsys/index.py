"""FAISS index over item embeddings, with the row -> item ID map beside it.

Scores are user vector · item embedding, exactly the model's full-softmax logits. Three kinds of index:

* `flat`: exact inner-product search, the model's own top-k. Its cost grows with the catalogue: at 1M items
  (64 dims, one thread, batch 1, top-60) p50 17 ms / p99 72 ms, far past the service's 5 ms budget.
* `ivf` and `hnsw`: approximate search (inverted lists over k-means cells; a navigable graph) for large
  catalogues. `auto` (the default) picks flat below `approximate_from` items and AUTO_APPROXIMATE from there on.

Inner product is not a distance (a vector's best match need not be itself or anything near it), and both graph
and cell search then lose their way (on a real model's vectors at 200k items, HNSW on raw inner products found
67% of the exact top-10 at efSearch 256, 98% after the reduction below). So the approximate kinds search an
equivalent L2 problem instead (the maximum-inner-product reduction of Bachrach et al., 2014):
each item x gets one more coordinate sqrt(R² - |x|²), R the largest item norm, and a query gets 0 there; then
|q - x|² = |q|² + R² - 2 q·x, so the nearest item in L2 is the one with the largest inner product. Candidates
are then re-scored exactly from the stored embeddings, so every returned score is the model's logit and the
order among candidates is exact; only a candidate the search missed can be missing.

An approximate search can come back with fewer than k rows (an IVF search whose cells hold fewer items, a graph
search that stalls); those rows are searched again exactly, so k rows come back whenever the catalogue has k.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recsys.bundle.layout import INDEX, INDEX_ENTRY, ITEM_IDS

INDEX_KINDS = ("auto", "flat", "hnsw", "ivf")
APPROXIMATE_KINDS = ("hnsw", "ivf")

# What `auto` builds, and from which size: measured with training/bench/index_scale.py on a trained model's 12,101
# item vectors (64 dims) extended with noisy copies (sigma 0.5 x their per-dimension std), searched with 1,000 of
# its real user vectors; one FAISS thread, batch 1, top-60 as the reader asks (10 + seen items), candidates
# re-scored; 2 shared cores at load 5-10, so wall-clock tails are mostly waits for a core (wall p99 5-14 ms for
# every approximate setting): CPU-time percentiles beside them.
#
#   1M items                               recall@10  p50 ms  CPU p50/p99 ms  build s (CPU s)  items.faiss
#   flat                                       1       36.9    12.3 / 17.9           -            256 MB
#   ivf  nlist 4096, nprobe 64                 0.973    0.52    0.52 / 1.09      117 (38)          277 MB
#   ivf  nlist 4096, nprobe 128                0.989    0.89    0.88 / 1.45      117 (38)          277 MB
#   ivf  nlist 4096, nprobe 192 (default)      0.993    1.02    1.02 / 1.37       53 (36)          277 MB
#   ivf  nlist 4096, nprobe 256                0.996    2.2     1.73 / 2.57      117 (38)          277 MB
#   hnsw M 32, efConstruction 40, ef 256       0.828    0.94    0.92 / 1.68      322 (162)         532 MB
#   hnsw M 32, efConstruction 40, ef 1024      0.966    5.6     2.27 / 3.16      322 (162)         532 MB
#
# IVF passes the recall aim (>= 0.98) where HNSW, at twice its CPU time per query, still misses it; it builds on
# a quarter of the CPU into half the bytes. HNSW's graph walks poorly towards user vectors that are ~40x longer
# than any item vector (it is kept as a choice: on other vectors it may do better). nprobe 192 is the default
# because 128 fell to 0.975 / 0.968 with noise 0.2 / 1.0 x std, where 192 kept 0.981 / 0.980. Flat search costs
# 1.1 ms p50 (CPU p99 1.5 ms) at 100k items and 2.1 ms (3.4 ms) at 200k: exact search stays the default below
# 100k items, within the search's share of the 5 ms budget; IVF there (nlist 1024) found 0.993 at nprobe 128.
AUTO_APPROXIMATE = "ivf"


@dataclass(frozen=True)
class IndexParams:
    """Which index to build and how to search it; the built kind and its parameters go into the manifest.

    Build parameters: `hnsw_m` (graph degree), `hnsw_ef_construction`, `ivf_nlist` (cells; None: the power of
    two nearest 4·sqrt(items), capped so that each cell has at least 39 items to train on). Search parameters,
    set again whenever a bundle is loaded: `hnsw_ef_search`, `ivf_nprobe` (cells visited per query, at
    most nlist).
    """

    kind: str = "auto"
    approximate_from: int = 100_000  # `auto`: flat below this many items (see AUTO_APPROXIMATE for why)
    hnsw_m: int = 32
    hnsw_ef_construction: int = 40
    hnsw_ef_search: int = 256
    ivf_nlist: int | None = None
    ivf_nprobe: int = 192

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"index.kind={self.kind!r} is not one of {', '.join(repr(k) for k in INDEX_KINDS)}")
        minimum = {"approximate_from": 0, "hnsw_m": 2, "hnsw_ef_construction": 1, "hnsw_ef_search": 1, "ivf_nprobe": 1}
        if self.ivf_nlist is not None:
            minimum["ivf_nlist"] = 1
        for name, low in minimum.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise ValueError(f"index.{name}={value!r} must be an integer >= {low}")

    @property
    def approximate(self) -> bool:
        return self.kind in APPROXIMATE_KINDS

    def resolve(self, n_items: int) -> IndexParams:
        """The concrete index for a catalogue of n_items: `auto` decided, nlist chosen, limits checked."""
        kind = self.kind
        if kind == "auto":
            kind = AUTO_APPROXIMATE if n_items >= self.approximate_from else "flat"
        resolved = replace(self, kind=kind)
        if kind != "ivf":
            return replace(resolved, ivf_nlist=None)
        nlist = self.ivf_nlist or _default_nlist(n_items)
        if nlist > n_items:
            raise ValueError(f"index.ivf_nlist={nlist} needs at least {nlist} items, the catalogue has {n_items}")
        # visiting every cell is already an exhaustive search: a larger nprobe means the same, recorded as nlist
        return replace(resolved, ivf_nlist=nlist, ivf_nprobe=min(self.ivf_nprobe, nlist))

    def manifest_entry(self) -> dict[str, Any]:
        """The built kind and only its own parameters (the manifest's `index` entry)."""
        if self.kind == "auto":
            raise ValueError("resolve() the parameters for a catalogue before recording them")
        prefix = {"flat": None, "hnsw": "hnsw_", "ivf": "ivf_"}[self.kind]
        entry: dict[str, Any] = {"kind": self.kind}
        if prefix is not None:
            entry |= {name: value for name, value in asdict(self).items() if name.startswith(prefix)}
        return entry

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> IndexParams:
        """The index a bundle was built with; bundles from before the field existed hold a flat index."""
        entry = manifest.get(INDEX_ENTRY) or {"kind": "flat"}
        known = set(cls.__dataclass_fields__) - {"approximate_from"}
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"the manifest's {INDEX_ENTRY} entry has unknown fields {unknown}; known: {sorted(known)}")
        if entry.get("kind") == "auto":
            raise ValueError(f"the manifest's {INDEX_ENTRY} entry must name the built kind, not 'auto'")
        return cls(**entry)


FLAT = IndexParams(kind="flat")


def _default_nlist(n_items: int) -> int:
    """The power of two nearest 4·sqrt(n) cells (FAISS's guideline is 4-16·sqrt(n): fewer cells keep k-means cheap
    at build), halved until k-means has the 39 items per cell FAISS asks for."""
    nlist = 1 << max(0, round(math.log2(max(1.0, 4 * math.sqrt(n_items)))))
    while nlist > 1 and 39 * nlist > n_items:
        nlist //= 2
    return nlist


def _with_equal_norms(embeddings: np.ndarray) -> np.ndarray:
    """Items with one more coordinate that brings every norm to the largest: inner-product order as L2 order."""
    squared = np.einsum("ij,ij->i", embeddings, embeddings)
    extra = np.sqrt(np.maximum(squared.max(initial=0.0) - squared, 0.0))
    return np.ascontiguousarray(np.hstack([embeddings, extra[:, None]]), dtype=np.float32)


def _with_zero(vectors: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.hstack([vectors, np.zeros((len(vectors), 1), dtype=np.float32)]))


class ItemIndex:
    def __init__(self, index: faiss.Index, item_ids: list[str], params: IndexParams = FLAT):
        if index.ntotal != len(item_ids):
            raise ValueError(f"index holds {index.ntotal} vectors but the row map has {len(item_ids)} item IDs")
        if params.kind == "auto":
            raise ValueError("an ItemIndex holds a built index: give the resolved parameters, not kind 'auto'")
        expected_type = {"flat": faiss.IndexFlatIP, "hnsw": faiss.IndexHNSWFlat, "ivf": faiss.IndexIVFFlat}
        if not isinstance(index, expected_type[params.kind]):
            raise ValueError(f"{INDEX} holds a FAISS {type(index).__name__} but index.kind is {params.kind!r}")
        self.index = index
        self.item_ids = item_ids
        self.params = params
        self._search_parameters: faiss.SearchParameters | None = None
        self._vectors: np.ndarray | None = None  # the embeddings, kept to re-score candidates exactly
        if params.kind == "hnsw":
            index.hnsw.efSearch = params.hnsw_ef_search
        elif params.kind == "ivf":
            if params.ivf_nlist != index.nlist:
                raise ValueError(f"{INDEX} has {index.nlist} cells but index.ivf_nlist is {params.ivf_nlist}")
            index.nprobe = params.ivf_nprobe
            self._search_parameters = faiss.SearchParametersIVF(nprobe=params.ivf_nprobe)
        if params.approximate:
            if params.kind == "ivf":
                index.make_direct_map()  # rows are scattered over the cells: reconstruct needs the row map
            self._vectors = np.ascontiguousarray(index.reconstruct_n(0, index.ntotal)[:, :-1])

    @classmethod
    def build(cls, embeddings: np.ndarray, item_ids: list[str], params: IndexParams = IndexParams()) -> ItemIndex:
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        params = params.resolve(len(embeddings))
        dim = embeddings.shape[1]
        if params.kind == "flat":
            index = faiss.IndexFlatIP(dim)
            index.add(embeddings)
        elif params.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim + 1, params.hnsw_m)  # L2 over the equal-norm items
            index.hnsw.efConstruction = params.hnsw_ef_construction
            index.add(_with_equal_norms(embeddings))
        else:
            assert params.ivf_nlist is not None
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim + 1), dim + 1, params.ivf_nlist)
            # k-means on 64 items per cell for 10 rounds (FAISS: 256 and 25): at 1M items ~4x faster to train,
            # and the cells only route queries, exact scores come from the stored vectors
            index.cp.max_points_per_centroid = 64
            index.cp.niter = 10
            items = _with_equal_norms(embeddings)
            index.train(items)
            index.add(items)
        return cls(index, list(item_ids), params)

    @property
    def dim(self) -> int:
        return self.index.d - 1 if self.params.approximate else self.index.d

    def __len__(self) -> int:
        return self.index.ntotal

    def embeddings(self) -> np.ndarray:
        if self._vectors is not None:
            return self._vectors
        return self.index.reconstruct_n(0, self.index.ntotal)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows and inner-product scores per vector, best first (rows are dense item indices)."""
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        k = min(k, self.index.ntotal)
        if not self.params.approximate:
            scores, rows = self.index.search(vectors, k)
            return rows, scores
        if self.params.kind == "hnsw":
            # a graph search keeps efSearch candidates: fewer than k would cut the answer short
            parameters = faiss.SearchParametersHNSW(efSearch=max(self.params.hnsw_ef_search, k))
        else:
            parameters = self._search_parameters
        _, rows = self.index.search(_with_zero(vectors), k, params=parameters)
        short = np.flatnonzero((rows < 0).any(axis=1))
        if len(short):
            rows[short] = self.exact_search(vectors[short], k)[0]
        scores = np.einsum("qd,qkd->qk", vectors, self._vectors[rows])  # exact logits of the candidates
        order = np.argsort(-scores, axis=1, kind="stable")
        return np.take_along_axis(rows, order, axis=1), np.take_along_axis(scores, order, axis=1)

    def exact_search(self, vectors: np.ndarray, k: int, chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """The exact top-k by brute force over the stored embeddings, whatever the kind of index."""
        embeddings = self.embeddings()
        k = min(k, len(embeddings))
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        rows = np.empty((len(vectors), k), dtype=np.int64)
        scores = np.empty((len(vectors), k), dtype=np.float32)
        for start in range(0, len(vectors), chunk):  # a chunk of queries × all items at a time bounds memory
            block = vectors[start : start + chunk] @ embeddings.T
            top = np.argpartition(-block, k - 1, axis=1)[:, :k] if k < block.shape[1] else np.argsort(-block, axis=1)
            top_scores = np.take_along_axis(block, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            rows[start : start + chunk] = np.take_along_axis(top, order, axis=1)
            scores[start : start + chunk] = np.take_along_axis(top_scores, order, axis=1)
        return rows, scores

    def recall(self, vectors: np.ndarray, k: int = 10, fetch: int | None = None) -> float:
        """Mean share of the exact top-k that the index's top-k holds, searching `fetch` (default k) rows as the
        reader does when it leaves seen items out; 1.0 for a flat index up to ties."""
        found = self.search(vectors, fetch or k)[0][:, :k]
        exact = self.exact_search(vectors, k)[0]
        hits = sum(len(np.intersect1d(a, b)) for a, b in zip(found, exact, strict=True))
        return hits / max(1, exact.size)

    def save(self, directory: str | Path) -> list[Path]:
        directory = Path(directory)
        faiss.write_index(self.index, str(directory / INDEX))
        (directory / ITEM_IDS).write_text(json.dumps(self.item_ids))
        return [directory / INDEX, directory / ITEM_IDS]

    @classmethod
    def load(cls, directory: str | Path, params: IndexParams = FLAT) -> ItemIndex:
        """The saved index, searched with `params` (a bundle's: IndexParams.from_manifest)."""
        directory = Path(directory)
        index = faiss.read_index(str(directory / INDEX))
        return cls(index, json.loads((directory / ITEM_IDS).read_text()), params)
