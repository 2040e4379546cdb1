"""The bundle's memory-mapped histories answer exactly what a dict of the same histories answers."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recsys.bundle.histories import StoredHistories, history_arrays, write_histories
from recsys.bundle.layout import HISTORY_ID_BYTES, HISTORY_ID_OFFSETS, HISTORY_INDPTR, HISTORY_ITEMS, HISTORY_KEYS

NAMES = (HISTORY_KEYS, HISTORY_ID_OFFSETS, HISTORY_ID_BYTES, HISTORY_INDPTR, HISTORY_ITEMS)

ITEM_IDS = [f"SKU-{i:03d}" for i in range(50)]


def _histories(n_users: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    users = [f"U-{i}" for i in range(n_users)] + ["ユーザー", "42", ""]
    return {u: rng.integers(0, len(ITEM_IDS), rng.integers(0, 12)) for u in users}


def test_mapped_histories_equal_the_dict_they_were_written_from(tmp_path):
    expected = _histories(300)
    write_histories(tmp_path, list(expected), list(expected.values()))
    stored = StoredHistories.open(tmp_path, ITEM_IDS)
    assert isinstance(stored.items, np.memmap)  # mapped, not read into the process
    assert len(stored) == len(expected) and set(stored) == set(expected)
    for user, rows in expected.items():
        assert stored[user] == [ITEM_IDS[r] for r in rows]
        assert np.array_equal(stored.rows(user), rows)
    assert stored.get("nobody") is None and stored.rows("nobody") is None
    with pytest.raises(KeyError):
        stored["U-999999"]


def test_in_memory_histories_from_a_frame_answer_the_same(tmp_path):
    expected = _histories(50, seed=1)
    frame = pl.DataFrame(
        {
            "user_id": list(expected),
            "item_ids": [[ITEM_IDS[r] for r in rows] + ["unknown-item"] for rows in expected.values()],
        }
    )
    stored = StoredHistories.from_frame(frame, ITEM_IDS)
    assert {u: stored[u] for u in stored} == {u: [ITEM_IDS[r] for r in rows] for u, rows in expected.items()}


def test_no_users_and_a_hash_collision_are_handled(tmp_path):
    write_histories(tmp_path, [], [])
    empty = StoredHistories.open(tmp_path, ITEM_IDS)
    assert len(empty) == 0 and empty.get("anyone") is None

    # every user on one key: each must still be found by its own ID bytes
    def same_key(user_id: str) -> int:
        return 7

    arrays = history_arrays(["a", "b", "c"], [np.array([1]), np.array([2, 3]), np.array([], dtype=np.int32)], same_key)
    collided = StoredHistories(*(arrays[name] for name in NAMES), ITEM_IDS, key_of=same_key)
    assert collided["a"] == ["SKU-001"] and collided["b"] == ["SKU-002", "SKU-003"] and collided["c"] == []
    assert collided.get("d") is None
