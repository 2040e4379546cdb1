"""Generated slates: the LM writes the next N items autoregressively, like text, with no repeats.

Beam search over item tokens: each beam is a history plus the items generated so far; a step scores every
item (log-softmax of user vector · item embeddings), removes the history and the beam's own items, and keeps
the `beam_width` best continuations by summed log-probability. beam_width=1 is greedy decoding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from training.lm.model import GenerativeRecommender


@torch.no_grad()
def generate_slates(
    model: GenerativeRecommender,
    histories: Sequence[np.ndarray],
    n: int = 5,
    beam_width: int = 4,
    exclude_seen: bool = True,
) -> np.ndarray:
    """(len(histories), n) item indices: the highest-probability continuation found by beam search."""
    if n < 1 or beam_width < 1:
        raise ValueError(f"n and beam_width must be >= 1, got n={n}, beam_width={beam_width}")
    slates = [_beam_search(model, np.asarray(h, dtype=np.int64), n, beam_width, exclude_seen) for h in histories]
    return np.stack(slates) if slates else np.zeros((0, n), dtype=np.int64)


def _beam_search(model: GenerativeRecommender, history: np.ndarray, n: int, width: int, exclude_seen: bool):
    beams: list[tuple[float, list[int]]] = [(0.0, [])]
    for _ in range(n):
        inputs = [np.concatenate([history, np.asarray(items, dtype=np.int64)]) for _, items in beams]
        log_probs = torch.log_softmax(torch.from_numpy(model.score(inputs)), dim=1).numpy()
        candidates = []
        for row, (total, items) in enumerate(beams):
            blocked = list(items) + (history.tolist() if exclude_seen else [])
            log_probs[row, blocked] = -np.inf
            best = np.argpartition(-log_probs[row], width - 1)[:width]
            candidates.extend((total + float(log_probs[row, i]), [*items, int(i)]) for i in best)
        candidates.sort(key=lambda c: -c[0])
        beams = candidates[:width]
    return np.asarray(beams[0][1], dtype=np.int64)


def slate_metrics(slates: np.ndarray, futures: Sequence[np.ndarray]) -> dict[str, float]:
    """How well N recommended items match the user's actual next N events.

    precision@N = |slate ∩ future| / N (the set overlap); ndcg@N credits a slate item at position p that is
    anywhere in the future set; first_hit = the first slate item is the actual next event; order-aware
    `next_item_in_slate` = the actual next event is anywhere in the slate.
    """
    n = slates.shape[1]
    discounts = 1.0 / np.log2(np.arange(2, n + 2))
    precision, ndcg, first_hit, next_in = [], [], [], []
    for slate, future in zip(slates, futures, strict=True):
        future_set = set(future.tolist())
        gains = np.array([item in future_set for item in slate], dtype=float)
        ideal = discounts[: min(n, len(future_set))].sum()
        precision.append(gains.sum() / n)
        ndcg.append((gains * discounts).sum() / ideal if ideal else 0.0)
        first_hit.append(float(slate[0] == future[0]))
        next_in.append(float(future[0] in set(slate.tolist())))
    return {
        f"precision@{n}": float(np.mean(precision)),
        f"ndcg@{n}": float(np.mean(ndcg)),
        "first_hit": float(np.mean(first_hit)),
        "next_item_in_slate": float(np.mean(next_in)),
        "users": len(futures),
    }
