"""How item histories become model inputs; shared by the torch model and the onnxruntime engine."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PAD_TOKEN_ID = 0


def left_pad(
    histories: Sequence[np.ndarray], max_len: int, token_offset: int, pad_token_id: int = PAD_TOKEN_ID
) -> tuple[np.ndarray, np.ndarray]:
    """Token IDs and attention mask, int64, histories cut to their last max_len items and left-padded.

    Left padding puts every user's most recent item in the last position, where the user vector is read.
    """
    cut = [np.asarray(h, dtype=np.int64)[-max_len:] for h in histories]
    width = max(1, max((len(h) for h in cut), default=1))
    ids = np.full((len(cut), width), pad_token_id, dtype=np.int64)
    mask = np.zeros((len(cut), width), dtype=np.int64)
    for row, h in enumerate(cut):
        if len(h):
            ids[row, width - len(h) :] = h + token_offset
            mask[row, width - len(h) :] = 1
    return ids, mask
