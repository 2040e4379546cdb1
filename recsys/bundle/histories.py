"""Each known user's recent items, as flat arrays a worker memory-maps instead of a dict it builds.

The pages are the OS's page cache, shared by every worker process on the machine, so a worker's memory does
not grow with the number of users and opening a bundle is O(1) in users. A user is found by a 64-bit hash of
the ID (binary search over the sorted hashes), confirmed against the stored ID bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import polars as pl

from recsys.bundle.layout import HISTORY_ID_BYTES, HISTORY_ID_OFFSETS, HISTORY_INDPTR, HISTORY_ITEMS, HISTORY_KEYS


def user_key(user_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(user_id.encode(), digest_size=8).digest(), "little")


def history_arrays(
    user_ids: Sequence[str], rows: Sequence[np.ndarray], key_of: Callable[[str], int] = user_key
) -> dict[str, np.ndarray]:
    """The stored layout, by file name: users ordered by key, their ID bytes and item rows laid end to end."""
    keys = np.fromiter((key_of(str(u)) for u in user_ids), dtype=np.uint64, count=len(user_ids))
    order = np.argsort(keys, kind="stable")
    encoded = [str(user_ids[i]).encode() for i in order]
    items = [np.asarray(rows[i], dtype=np.int32) for i in order]
    return {
        HISTORY_KEYS: keys[order],
        HISTORY_ID_OFFSETS: np.cumsum([0, *map(len, encoded)], dtype=np.int64),
        HISTORY_ID_BYTES: np.frombuffer(b"".join(encoded), dtype=np.uint8),
        HISTORY_INDPTR: np.cumsum([0, *map(len, items)], dtype=np.int64),
        HISTORY_ITEMS: np.concatenate(items) if items else np.zeros(0, dtype=np.int32),
    }


def write_histories(directory: Path, user_ids: Sequence[str], rows: Sequence[np.ndarray]) -> None:
    """Write the arrays of these users' item rows (dense item indices) for `StoredHistories.open`."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in history_arrays(user_ids, rows).items():
        if name == HISTORY_ID_BYTES:
            (directory / name).write_bytes(array.tobytes())
        else:
            np.save(directory / name, array)


class StoredHistories(Mapping[str, list[str]]):
    """user ID -> the item IDs of that user's stored history, oldest first."""

    def __init__(
        self,
        keys: np.ndarray,
        id_offsets: np.ndarray,
        id_bytes: np.ndarray,
        indptr: np.ndarray,
        items: np.ndarray,
        item_ids: Sequence[str],
        key_of: Callable[[str], int] = user_key,
    ) -> None:
        self.keys, self.id_offsets, self.id_bytes = keys, id_offsets, id_bytes
        self.indptr, self.items, self.item_ids = indptr, items, item_ids
        self.key_of = key_of

    @classmethod
    def open(cls, directory: Path, item_ids: Sequence[str]) -> StoredHistories:
        """Memory-map the arrays `write_histories` wrote."""
        path = directory / HISTORY_ID_BYTES
        id_bytes = np.memmap(path, dtype=np.uint8, mode="r") if path.stat().st_size else np.zeros(0, np.uint8)
        keys, offsets, indptr, items = (
            np.load(directory / name, mmap_mode="r")
            for name in (HISTORY_KEYS, HISTORY_ID_OFFSETS, HISTORY_INDPTR, HISTORY_ITEMS)
        )
        return cls(keys, offsets, id_bytes, indptr, items, item_ids)

    @classmethod
    def from_frame(cls, frame: pl.DataFrame, item_ids: Sequence[str]) -> StoredHistories:
        """The same lookups in memory, from a (user_id, item_ids) frame: bundles written before the arrays."""
        index = {item_id: row for row, item_id in enumerate(item_ids)}
        rows = [np.asarray([index[i] for i in items if i in index], dtype=np.int32) for items in frame["item_ids"]]
        arrays = history_arrays(frame["user_id"].cast(pl.String).to_list(), rows)
        return cls(
            arrays[HISTORY_KEYS],
            arrays[HISTORY_ID_OFFSETS],
            arrays[HISTORY_ID_BYTES],
            arrays[HISTORY_INDPTR],
            arrays[HISTORY_ITEMS],
            item_ids,
        )

    def _position(self, user_id: str) -> int | None:
        key = np.uint64(self.key_of(user_id))
        position = int(np.searchsorted(self.keys, key))
        wanted = user_id.encode()
        while position < len(self.keys) and self.keys[position] == key:  # more than one only on a hash collision
            if self._id_bytes(position) == wanted:
                return position
            position += 1
        return None

    def _id_bytes(self, position: int) -> bytes:
        return bytes(self.id_bytes[self.id_offsets[position] : self.id_offsets[position + 1]])

    def rows(self, user_id: str) -> np.ndarray | None:
        """The user's item rows (dense indices), or None for a user the bundle does not know."""
        position = self._position(str(user_id))
        return None if position is None else np.asarray(self.items[self.indptr[position] : self.indptr[position + 1]])

    def __getitem__(self, user_id: str) -> list[str]:
        rows = self.rows(user_id)
        if rows is None:
            raise KeyError(user_id)
        return [self.item_ids[r] for r in rows]

    def __iter__(self) -> Iterator[str]:
        return (self._id_bytes(p).decode() for p in range(len(self.keys)))

    def __len__(self) -> int:
        return len(self.keys)
