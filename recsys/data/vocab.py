"""The item vocabulary: the one mapping between catalogue item IDs and dense item indices.

Every model, the evaluator and the bundle speak dense item indices 0..n_items-1; only the vocabulary knows
the source IDs. It is saved as JSON (a list of item IDs, index = position) so that a warm start can map
the rows of a previous model onto a grown catalogue by item ID.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np


class ItemVocab:
    def __init__(self, item_ids: Sequence[str]):
        self.item_ids: list[str] = [str(i) for i in item_ids]
        self._index = {item_id: i for i, item_id in enumerate(self.item_ids)}
        if len(self._index) != len(self.item_ids):
            raise ValueError("item vocabulary has duplicate item IDs; deduplicate the catalogue first")

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item_id: object) -> bool:
        return str(item_id) in self._index

    def index_of(self, item_id: str) -> int:
        """Dense index of one item; KeyError with the ID when it is unknown."""
        try:
            return self._index[str(item_id)]
        except KeyError:
            raise KeyError(f"unknown item ID {item_id!r}") from None

    def lookup(self, item_ids: Iterable[str]) -> tuple[np.ndarray, list[str]]:
        """Indices of the known IDs (order kept) and the list of unknown IDs, which are skipped."""
        known, unknown = [], []
        for item_id in item_ids:
            index = self._index.get(str(item_id))
            if index is None:
                unknown.append(str(item_id))
            else:
                known.append(index)
        return np.asarray(known, dtype=np.int64), unknown

    def extended(self, new_item_ids: Iterable[str]) -> ItemVocab:
        """A vocabulary with the same indices for existing items and new items appended at the end."""
        extra = [str(i) for i in dict.fromkeys(new_item_ids) if str(i) not in self._index]
        return ItemVocab(self.item_ids + extra)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps({"item_ids": self.item_ids}))

    @classmethod
    def load(cls, path: str | Path) -> ItemVocab:
        return cls(json.loads(Path(path).read_text())["item_ids"])
