"""The report's inputs: the bundle, the events (polars lazy scans), user attributes and the segment.

`load_data` gathers what the later steps share: the holdout (each user's last event held out, for the
back-test), each user's whole history (for the forward predictions), training item counts and categories.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import sparse

from recsys.bundle.reader import BundleRecommender
from recsys.data import lake
from recsys.data.sequences import HoldoutSet, LeaveOneOut, Sequences, build_sequences, leave_one_out
from recsys.data.vocab import ItemVocab

MOVIELENS_AGE = {
    "1": "Under 18",
    "18": "18-24",
    "25": "25-34",
    "35": "35-44",
    "45": "45-49",
    "50": "50-55",
    "56": "56+",
}


@dataclass
class ReportData:
    engine: BundleRecommender
    k: int  # items per user: the configured k, at most the catalogue
    users_table: pl.DataFrame | None
    segment_users: set[str] | None  # None: every user
    segment_label: str
    events_lazy: pl.LazyFrame  # user_id, item_id, timestamp, _order
    overview: dict[str, Any]  # events, users, items, t_min, t_max, unknown_item_events
    real_time: bool  # timestamps are epoch seconds, not positions in a sequence file
    sequences: Sequences
    split: LeaveOneOut
    train_counts: np.ndarray  # training events per item (float64)
    category_names: list[str]
    category_matrix: sparse.csr_matrix  # (n_items, n_categories), see item_categories
    holdout: HoldoutSet  # the back-test's users: the segment's users of the test split, or a fixed sample of them
    holdout_users: int  # the segment's users of the test split, before sampling
    forward_users: list[str]
    forward_hist: list[np.ndarray]  # the last max_len items of each forward user's history
    cold_users: list[str]  # every event on an item the bundle does not know: popularity fallback

    @property
    def n_items(self) -> int:
        return self.engine.n_items


def cpu_threads() -> int:
    """OMP_NUM_THREADS when set, else the CPUs this process may run on."""
    configured = os.environ.get("OMP_NUM_THREADS", "")
    if configured.isdigit() and int(configured) > 0:
        return int(configured)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def scan_events(path: Path) -> pl.LazyFrame:
    """user_id, item_id, timestamp, _order (the original order) from a prepared dataset or partitioned parquet."""
    path = Path(path)
    if (path / "summary.json").exists() and (path / "events.parquet").exists():
        frame = pl.scan_parquet(path / "events.parquet")
    else:
        frame = lake.scan_events(path)
    names = frame.collect_schema().names()
    order = [c for c in ("ingest", "row") if c in names]
    frame = frame.select("user_id", "item_id", pl.col("timestamp").cast(pl.Int64), *order)
    frame = frame.with_columns(pl.col("user_id").cast(pl.String), pl.col("item_id").cast(pl.String))
    if order:
        frame = frame.sort(order)
    return frame.with_row_index("_order").drop(order)


def load_users(path: Path | None) -> pl.DataFrame | None:
    """User attributes as strings; MovieLens users.dat gets readable gender and age bands (occupation and zip
    code are left out: too many groups to audit, and zip is close to identifying)."""
    if path is None:
        return None
    path = Path(path)
    if path.suffix.lower() == ".dat":
        parts = pl.col("line").str.split("::")
        return (
            pl.read_lines(path)
            .filter(pl.col("line") != "")
            .select(
                parts.list.get(0).alias("user_id"),
                parts.list.get(1).replace({"F": "female", "M": "male"}).alias("gender"),
                parts.list.get(2).replace(MOVIELENS_AGE).alias("age"),
            )
        )
    frame = (
        pl.read_parquet(path) if path.suffix.lower() in {".parquet", ".pq"} else pl.read_csv(path, infer_schema=False)
    )
    if "user_id" not in frame.columns:
        raise ValueError(f"{path} has no user_id column (found {frame.columns})")
    return frame.select(pl.all().cast(pl.String))


def parse_segment(segment: list[str], users: pl.DataFrame | None) -> tuple[set[str] | None, str]:
    """The users matching every COLUMN=VALUE condition (None: no condition) and a label for the page."""
    if not segment:
        return None, "all users"
    if users is None:
        raise ValueError("--segment filters on user attributes: give them with --users")
    mask = pl.lit(True)
    for condition in segment:
        column, sep, value = condition.partition("=")
        if not sep or column not in users.columns:
            raise ValueError(f"segment {condition!r}: use COLUMN=VALUE with a column of {users.columns}")
        mask = mask & (pl.col(column) == value)
    return set(users.filter(mask)["user_id"].to_list()), " and ".join(segment)


def item_categories(catalogue: pl.DataFrame | None, vocab: ItemVocab) -> tuple[list[str], sparse.csr_matrix]:
    """Category names and a sparse (n_items, n_categories) matrix; an item in g categories gives 1/g to each.

    MovieLens genres are pipe-separated; category paths ("A > B > C") keep their most specific part. Sparse:
    a million items in a thousand categories would be 4 GB dense.
    """
    if catalogue is None or "category" not in catalogue.columns:
        return [], sparse.csr_matrix((len(vocab), 0), dtype=np.float32)
    parts = (
        pl.DataFrame({"item_id": vocab.item_ids, "row": np.arange(len(vocab))})
        .join(
            catalogue.select(pl.col("item_id").cast(pl.String), pl.col("category").cast(pl.String)).unique(
                "item_id", keep="last", maintain_order=True
            ),
            on="item_id",
        )
        .select("row", pl.col("category").fill_null("").str.split("|"))
        .explode("category")
        .filter(pl.col("category").str.strip_chars() != "")
        .select("row", pl.col("category").str.split(">").list.last().str.strip_chars())
        .with_columns((1.0 / pl.len().over("row")).alias("weight"))
    )
    names = sorted(parts["category"].unique().to_list())
    column = parts["category"].replace_strict(names, list(range(len(names))), return_dtype=pl.Int64)
    matrix = sparse.csr_matrix(
        (parts["weight"].to_numpy().astype(np.float32), (parts["row"].to_numpy(), column.to_numpy())),
        shape=(len(vocab), len(names)),
    )  # repeated (item, category) pairs are summed, as a category named twice counts twice
    return names, matrix


def _overview(events: pl.LazyFrame, vocab: ItemVocab) -> dict[str, Any]:
    known = pl.Series(vocab.item_ids, dtype=pl.String)
    return (
        events.select(
            pl.len().alias("events"),
            pl.col("user_id").n_unique().alias("users"),
            pl.col("item_id").n_unique().alias("items"),
            pl.col("timestamp").min().alias("t_min"),
            pl.col("timestamp").max().alias("t_max"),
            (~pl.col("item_id").is_in(known.implode())).sum().alias("unknown_item_events"),
        )
        .collect()
        .row(0, named=True)
    )


def load_data(
    bundles: Path,
    events: Path,
    users: Path | None = None,
    segment: list[str] | None = None,
    k: int = 10,
    backtest_users: int | None = None,
) -> ReportData:
    """Open the bundle, scan the events and split them; aggregations run in polars, on partitioned parquet.

    `backtest_users`: the back-test ranks every item for each of its users, so past this many it runs on a fixed
    random sample of them (None: all); the forward predictions always cover every user."""
    engine = BundleRecommender(bundles, threads=cpu_threads())
    vocab = engine.vocab
    users_table = load_users(users)
    segment_users, segment_label = parse_segment(segment or [], users_table)

    events_lazy = scan_events(events)
    overview = _overview(events_lazy, vocab)
    frame = events_lazy.select("user_id", "item_id", "timestamp", pl.col("_order").alias("row")).collect()
    sequences = build_sequences(frame, vocab)
    split = leave_one_out(sequences, engine.max_len)
    train_counts = np.bincount(np.concatenate(split.train.items), minlength=engine.n_items).astype(np.float64)
    category_names, category_matrix = item_categories(engine.catalogue, vocab)

    def in_segment(user_ids: list[str]) -> np.ndarray:
        if segment_users is None:
            return np.arange(len(user_ids))
        return np.array([i for i, u in enumerate(user_ids) if u in segment_users], dtype=np.int64)

    test = split.test
    chosen = in_segment(test.user_ids)
    holdout = HoldoutSet([test.user_ids[i] for i in chosen], [test.inputs[i] for i in chosen], test.targets[chosen])
    holdout_users = len(holdout)
    if backtest_users is not None:
        holdout = holdout.subset(backtest_users, seed=0)
    forward_idx = in_segment(sequences.user_ids)
    forward_users = [sequences.user_ids[i] for i in forward_idx]
    if not len(holdout) and not forward_users:
        raise ValueError(f"no user of {segment_label} has events on items the bundle knows")
    cold_users = sorted(set(frame["user_id"].unique().to_list()) - set(sequences.user_ids))
    if segment_users is not None:
        cold_users = [u for u in cold_users if u in segment_users]
    return ReportData(
        engine=engine,
        k=min(k, engine.n_items),
        users_table=users_table,
        segment_users=segment_users,
        segment_label=segment_label,
        events_lazy=events_lazy,
        overview=overview,
        real_time=overview["t_min"] > 10**8,  # epoch seconds (after 1973), not positions in a sequence file
        sequences=sequences,
        split=split,
        train_counts=train_counts,
        category_names=category_names,
        category_matrix=category_matrix,
        holdout=holdout,
        holdout_users=holdout_users,
        forward_users=forward_users,
        forward_hist=[sequences.items[i][-engine.max_len :] for i in forward_idx],
        cold_users=cold_users,
    )
