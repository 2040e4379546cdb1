"""Bias audit: hit rate and exposure per group of a user attribute, with 95% Wilson intervals."""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from training.reports.charts import pct

MAX_GROUPS = 12  # attributes with more distinct values than this are not audited (IDs, zip codes)


def wilson(hits: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def bias_audit(users_table: pl.DataFrame, per_user: dict[str, Any]) -> list[dict[str, Any]]:
    """One audit per attribute with 2..MAX_GROUPS groups among the holdout users.

    `per_user` holds user_id, hit, ndcg, tail (long-tail share of the top 10) and pop (its mean popularity
    percentile), one value per holdout user.
    """
    table = pl.DataFrame(per_user).join(users_table, on="user_id", how="left")
    audits = []
    for column in [c for c in users_table.columns if c != "user_id"]:
        groups = table.filter(pl.col(column).is_not_null())
        if groups.is_empty() or groups[column].n_unique() > MAX_GROUPS or groups[column].n_unique() < 2:
            continue
        audits.append(_audit(column, groups))
    return audits


def _audit(column: str, groups: pl.DataFrame) -> dict[str, Any]:
    stats = (
        groups.group_by(column)
        .agg(
            pl.len().alias("users"),
            pl.col("hit").sum().alias("hits"),
            pl.col("hit").mean().alias("hr"),
            pl.col("ndcg").mean().alias("ndcg"),
            pl.col("tail").mean().alias("tail"),
            pl.col("pop").mean().alias("pop"),
        )
        .sort(column)
    )
    rows = []
    for r in stats.iter_rows(named=True):
        lo, hi = wilson(r["hits"], r["users"])
        rows.append(
            {
                "group": r[column],
                "users": r["users"],
                "HR@10": r["hr"],
                "ci": [lo, hi],
                "NDCG@10": r["ndcg"],
                "long_tail_share": r["tail"],
                "popularity_percentile": r["pop"],
            }
        )
    best = max(rows, key=lambda r: r["HR@10"])
    worst = min(rows, key=lambda r: r["HR@10"])
    separated = worst["ci"][1] < best["ci"][0]
    gap = best["HR@10"] - worst["HR@10"]
    statement = (
        f"HR@10 gap {gap * 100:.1f} points: {best['group']} {pct(best['HR@10'])} vs {worst['group']} "
        f"{pct(worst['HR@10'])} (ratio {worst['HR@10'] / best['HR@10'] if best['HR@10'] else 0:.2f}); "
        + ("the 95% intervals do not overlap." if separated else "within the 95% intervals: not a clear gap.")
    )
    return {
        "attribute": column,
        "groups": rows,
        "hr_gap": gap,
        "separated": separated,
        "long_tail_gap": max(r["long_tail_share"] for r in rows) - min(r["long_tail_share"] for r in rows),
        "statement": statement,
    }
