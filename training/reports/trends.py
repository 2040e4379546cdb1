"""Trends over time: quality over previous nightly runs, and the items and categories that are rising."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from training.nightly.job import history


def night_history(nightly_dir: Path | None) -> list[dict[str, Any]]:
    """NDCG@10 of every kept nightly run that produced a candidate, oldest first."""
    if nightly_dir is None or not Path(nightly_dir).exists():
        return []
    rows = []
    for summary in history(nightly_dir):
        metrics = summary.get("metrics") or {}
        candidate = (metrics.get("candidate") or {}).get("NDCG@10")
        if candidate is None:
            continue
        rows.append(
            {
                "label": summary["run_id"],
                "candidate": candidate,
                "production": (metrics.get("production") or {}).get("NDCG@10"),
                "popularity": (metrics.get("popularity") or {}).get("NDCG@10"),
                "promoted": bool(summary.get("promoted")),
                "status": summary.get("status"),
            }
        )
    return rows


def rising(events: pl.LazyFrame, catalogue: pl.DataFrame | None, t_max: int, period: float | None) -> dict[str, Any]:
    """Items and categories whose event counts grew most from the previous window to the last one.

    With real timestamps a window is the report's period; otherwise (positions only) the last 10% of events.
    """
    if period is None:
        total = events.select(pl.len()).collect().item()
        window = max(1, total // 10)
        framed = events.with_columns(
            pl.when(pl.col("_order") >= total - window)
            .then(pl.lit("recent"))
            .when(pl.col("_order") >= total - 2 * window)
            .then(pl.lit("previous"))
            .alias("_window")
        )
        label = f"{window:,} events"
    else:
        framed = events.with_columns(
            pl.when(pl.col("timestamp") > t_max - period)
            .then(pl.lit("recent"))
            .when(pl.col("timestamp") > t_max - 2 * period)
            .then(pl.lit("previous"))
            .alias("_window")
        )
        label = f"{period / 86_400:g} days"
    counted = (
        framed.filter(pl.col("_window").is_not_null())
        .group_by("item_id")
        .agg(
            # Int64: polars counts are unsigned, and recent - previous must be able to go negative
            (pl.col("_window") == "recent").sum().cast(pl.Int64).alias("recent"),
            (pl.col("_window") == "previous").sum().cast(pl.Int64).alias("previous"),
        )
        .with_columns((pl.col("recent") - pl.col("previous")).alias("growth"))
    )
    top = (
        counted.filter(pl.col("growth") > 0)
        .sort("growth", "recent", "item_id", descending=[True, True, False])
        .head(10)
        .collect()
    )
    titles: dict[str, str] = {}
    if catalogue is not None and "title" in catalogue.columns:
        wanted = top["item_id"].to_list()
        sub = catalogue.filter(pl.col("item_id").cast(pl.String).is_in(wanted))
        titles = dict(zip(sub["item_id"].cast(pl.String).to_list(), sub["title"].to_list(), strict=True))
    items = [
        {
            "item_id": r["item_id"],
            "label": titles.get(r["item_id"], r["item_id"]),
            "recent": r["recent"],
            "previous": r["previous"],
        }
        for r in top.iter_rows(named=True)
    ]
    categories: list[dict[str, Any]] = []
    if catalogue is not None and "category" in catalogue.columns:
        genres = (
            catalogue.lazy()
            .select(pl.col("item_id").cast(pl.String), pl.col("category").fill_null("").str.split("|").alias("_cat"))
            .with_columns(pl.col("_cat").list.len().alias("_n"))
            .explode("_cat")
        )
        genres = genres.with_columns(pl.col("_cat").str.split(">").list.last().str.strip_chars()).filter(
            pl.col("_cat") != ""
        )
        by_cat = (
            counted.join(genres, on="item_id")
            .group_by("_cat")
            .agg(
                (pl.col("recent") / pl.col("_n")).sum().alias("recent"),
                (pl.col("previous") / pl.col("_n")).sum().alias("previous"),
            )
            .with_columns((pl.col("recent") - pl.col("previous")).alias("growth"))
            .filter(pl.col("growth") > 0)
            .sort("growth", "_cat", descending=[True, False])
            .head(8)
            .collect()
        )
        categories = [
            {"label": r["_cat"], "recent": round(r["recent"], 1), "previous": round(r["previous"], 1)}
            for r in by_cat.iter_rows(named=True)
        ]
    return {"window": label, "items": items, "categories": categories}
