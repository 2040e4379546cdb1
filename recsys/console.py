"""Rich tables shared by the CLI commands and the demo."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

TABLE_METRICS = ("HR@10", "NDCG@10", "HR@50", "NDCG@50", "HR@200", "NDCG@200", "MRR", "coverage@10")


def metrics_table(title: str, models: dict[str, dict], split: str = "test") -> Table:
    table = Table(title=title)
    table.add_column("model")
    for name in TABLE_METRICS:
        table.add_column(name, justify="right")
    for model_name, result in models.items():
        metrics = result[split]
        table.add_row(model_name, *(f"{metrics[name]:.4f}" for name in TABLE_METRICS))
    return table


def print_recommendations(console: Console, engine, result, as_json: bool = False) -> None:
    """One user's recommendations with catalogue titles; fallbacks and ignored items are said so."""
    if as_json:
        console.print_json(json.dumps(result.__dict__))
        return
    titles = engine.titles(result.item_ids)
    who = f"user {result.user_id}" if result.user_id is not None else "this history"
    flag = " [yellow](popularity fallback: unknown user or empty history)[/]" if result.fallback else ""
    table = Table(title=f"top {len(result.item_ids)} for {who} from bundle {result.bundle_version}{flag}")
    table.add_column("#", justify="right")
    table.add_column("item_id")
    table.add_column("title")
    table.add_column("score", justify="right")
    for rank, (item_id, score) in enumerate(zip(result.item_ids, result.scores, strict=True), start=1):
        table.add_row(str(rank), item_id, titles.get(item_id, ""), f"{score:.3f}")
    console.print(table)
    if result.unknown_items:
        console.print(f"ignored unknown items: {', '.join(result.unknown_items)}")
