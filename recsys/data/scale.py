"""Large synthetic worlds for scale tests: millions of users and items, streamed to partitioned parquet.

Memory stays bounded: users are generated a chunk at a time (vectorised across the chunk, one loop step per
position), and each chunk is written as its own parquet file. Item popularity follows a power law; behaviour
is sequential (the next item is often the successor of the last one in its category's chain, else a popular
item of the same category, else any popular item), so a sequence model has something to learn.
"""

from __future__ import annotations

import resource
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recsys.durable import atomic_write, atomic_write_json

EVENTS_DIR = "events"  # part-00000.parquet, ...: user_id, item_id, timestamp (Unix seconds)
CATALOGUE_FILE = "catalogue.parquet"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class ScaleWorld:
    items: int
    users: int
    events: int
    categories: int = 1000
    zipf: float = 1.1  # item popularity ~ 1 / rank^zipf
    p_next: float = 0.5  # the next item is the chain successor of the last one
    p_category: float = 0.3  # else a popular item of the last one's category; else any popular item
    max_length: int = 500  # events per user at most
    chunk_users: int = 50_000  # users generated and written together: bounds memory (~0.8 GB at 500 events)
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.items, self.users, self.categories, self.chunk_users) < 1:
            raise ValueError("items, users, categories and chunk_users must be at least 1")
        if not 3 * self.users <= self.events <= self.max_length * self.users:
            raise ValueError(
                f"events must be between 3 per user and max_length ({self.max_length}) per user: "
                f"{3 * self.users:,}..{self.max_length * self.users:,}, got {self.events:,}"
            )
        if not (self.p_next >= 0 and self.p_category >= 0 and self.p_next + self.p_category <= 1):
            raise ValueError("p_next and p_category must be probabilities whose sum is at most 1")


def _lengths(world: ScaleWorld, rng: np.random.Generator) -> np.ndarray:
    """Events per user: heavy-tailed (lognormal), at least 3, at most max_length, summing to exactly `events`."""
    raw = rng.lognormal(0.0, 1.0, world.users)
    lengths = np.clip(np.round(3 + raw / raw.sum() * (world.events - 3 * world.users)), 3, world.max_length)
    lengths = lengths.astype(np.int64)
    gap = world.events - int(lengths.sum())
    while gap:  # rounding and clipping: move single events until the total is exact
        room = lengths < world.max_length if gap > 0 else lengths > 3
        users = rng.choice(np.flatnonzero(room), min(abs(gap), int(room.sum())), replace=False)
        lengths[users] += int(np.sign(gap))
        gap = world.events - int(lengths.sum())
    return lengths


def _sample(cumulative: np.ndarray, low: np.ndarray, high: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices drawn with probability proportional to their weight, within [low, high) of the weight order."""
    start = np.where(low > 0, cumulative[np.maximum(low - 1, 0)], 0.0)
    u = start + rng.random(len(low)) * (cumulative[high - 1] - start)
    return np.minimum(np.searchsorted(cumulative, u, side="right"), high - 1)


def write_scale_world(world: ScaleWorld, out: str | Path, log=print) -> dict:
    """Write the catalogue, the events (one parquet file per chunk of users) and a summary with wall time and
    peak memory; returns the summary."""
    started = time.perf_counter()
    out = Path(out)
    (out / EVENTS_DIR).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(world.seed)
    # Items in weight order: item k has weight 1/(k+1)^zipf and a category; sorting by category keeps each
    # category a contiguous range, so "a popular item of this category" is a draw within one range.
    category = np.sort(rng.integers(0, world.categories, world.items))
    weight = 1.0 / (rng.permutation(world.items) + 1.0) ** world.zipf
    cumulative = np.cumsum(weight)
    first = np.searchsorted(category, np.arange(world.categories), side="left")
    last = np.searchsorted(category, np.arange(world.categories), side="right")
    item_ids = np.char.add("I", np.char.zfill(np.arange(world.items).astype(str), 8))
    catalogue = pl.DataFrame(
        {"item_id": item_ids, "title": np.char.add("Item ", item_ids), "category": category.astype(str)}
    )
    atomic_write(out / CATALOGUE_FILE, catalogue.write_parquet)

    lengths = _lengths(world, rng)
    n_chunks = (world.users + world.chunk_users - 1) // world.chunk_users
    for chunk in range(n_chunks):
        # Longest first: step t only touches the users still active, so the work is the events, not users x max.
        users = np.arange(chunk * world.chunk_users, min((chunk + 1) * world.chunk_users, world.users))
        users = users[np.argsort(-lengths[users], kind="stable")]
        length = lengths[users]
        items = np.zeros((len(users), int(length.max())), dtype=np.int64)
        items[:, 0] = _sample(cumulative, np.zeros(len(users), np.int64), np.full(len(users), world.items), rng)
        for t in range(1, items.shape[1]):
            active = int(np.count_nonzero(length > t))
            prev = items[:active, t - 1]
            cat_low, cat_high = first[category[prev]], last[category[prev]]
            successor = np.where(prev + 1 < cat_high, prev + 1, cat_low)  # the chain wraps within its category
            in_category = _sample(cumulative, cat_low, cat_high, rng)
            anywhere = _sample(cumulative, np.zeros_like(prev), np.full_like(prev, world.items), rng)
            draw = rng.random(active)
            items[:active, t] = np.where(
                draw < world.p_next, successor, np.where(draw < world.p_next + world.p_category, in_category, anywhere)
            )
        keep = np.arange(items.shape[1])[None, :] < length[:, None]
        start = rng.uniform(1.6e9, 1.6e9 + 365 * 86400, len(users))
        gaps = rng.exponential(6 * 3600, items.shape)
        timestamps = (start[:, None] + np.cumsum(gaps, axis=1)).astype(np.int64)
        user_of = np.broadcast_to(users[:, None], items.shape)
        frame = pl.DataFrame(
            {
                "user_id": np.char.add("U", np.char.zfill(user_of[keep].astype(str), 8)),
                "item_id": item_ids[items[keep]],
                "timestamp": timestamps[keep],
            }
        )
        atomic_write(out / EVENTS_DIR / f"part-{chunk:05d}.parquet", frame.write_parquet)
        log(f"chunk {chunk + 1}/{n_chunks}: {len(users):,} users, {len(frame):,} events")
    summary = {
        "world": asdict(world),
        "files": n_chunks,
        "wall_s": round(time.perf_counter() - started, 1),
        # ru_maxrss is in KiB on Linux: the process's peak resident memory, generation included
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    atomic_write_json(out / SUMMARY_FILE, summary)
    return summary
