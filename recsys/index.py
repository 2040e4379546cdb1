"""FAISS inner-product index over item embeddings, with the row -> item ID map beside it.

Scores are user vector · item embedding, exactly the model's full-softmax logits, so an exact (flat) index
returns the model's own top-k. Catalogues far past 100k items would switch to HNSW here.
"""

from __future__ import annotations

import json
from pathlib import Path

import faiss
import numpy as np

from recsys.bundle.layout import INDEX, ITEM_IDS


class ItemIndex:
    def __init__(self, index: faiss.Index, item_ids: list[str]):
        if index.ntotal != len(item_ids):
            raise ValueError(f"index holds {index.ntotal} vectors but the row map has {len(item_ids)} item IDs")
        self.index = index
        self.item_ids = item_ids

    @classmethod
    def build(cls, embeddings: np.ndarray, item_ids: list[str]) -> ItemIndex:
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        index = faiss.IndexFlatIP(embeddings.shape[1])
        index.add(embeddings)
        return cls(index, list(item_ids))

    @property
    def dim(self) -> int:
        return self.index.d

    def __len__(self) -> int:
        return self.index.ntotal

    def embeddings(self) -> np.ndarray:
        return self.index.reconstruct_n(0, self.index.ntotal)

    def search(self, vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows and inner-product scores per vector, best first (rows are dense item indices)."""
        k = min(k, self.index.ntotal)
        scores, rows = self.index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
        return rows, scores

    def save(self, directory: str | Path) -> list[Path]:
        directory = Path(directory)
        faiss.write_index(self.index, str(directory / INDEX))
        (directory / ITEM_IDS).write_text(json.dumps(self.item_ids))
        return [directory / INDEX, directory / ITEM_IDS]

    @classmethod
    def load(cls, directory: str | Path) -> ItemIndex:
        directory = Path(directory)
        index = faiss.read_index(str(directory / INDEX))
        return cls(index, json.loads((directory / ITEM_IDS).read_text()))
