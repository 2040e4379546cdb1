"""`recsys report behaviour`: what the model predicts users will do, for analysts and product managers.

Scores every user with the bundle (ONNX encoder + item embeddings: no torch) and writes, in one folder,
predictions.parquet (per user: top-k next items, likely categories, chance of activity next period),
report.html (one self-contained page of charts) and report.json (every number of the page).
Steps: data.py (inputs), predictions.py, backtest.py (the numbers), figures.py, page.py.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from training.reports import backtest, page, predictions
from training.reports.data import load_data
from training.reports.figures import build_figures


@dataclass
class ReportConfig:
    bundles: Path
    events: Path
    out: Path
    users: Path | None = None
    segment: list[str] = field(default_factory=list)
    nightly_dir: Path | None = None
    k: int = 10
    period_days: float = 7.0
    baselines: list[str] = field(default_factory=lambda: ["popularity", "als"])
    batch_size: int = 256
    # the back-test ranks every item for each user: past this many users it runs on a fixed sample of them
    backtest_users: int | None = 20_000


def build_report(cfg: ReportConfig, console: Console | None = None) -> dict[str, Any]:
    """Build the report into cfg.out; returns the paths written and the report's document."""
    console = console or Console()
    started = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    data = load_data(cfg.bundles, cfg.events, cfg.users, cfg.segment, cfg.k, cfg.backtest_users)

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    with progress:
        scores = backtest.score_holdout(data, cfg.batch_size, progress)
        forward = predictions.predict(data, cfg.batch_size, progress)
    findings = backtest.run(data, scores, forward, cfg.baselines, cfg.period_days, cfg.nightly_dir)

    frame = predictions.predictions_frame(data, forward, findings.p_active)
    predictions_path = predictions.write_predictions(frame, cfg.out / "predictions.parquet")
    figures = build_figures(findings)

    wall = time.perf_counter() - started
    document = page.document(data, findings, figures, forward, frame.height, wall)
    html_path, json_path = page.write_page(cfg.out, document, figures, cfg.period_days, data.real_time)
    console.print(
        f"report over {frame.height:,} users in {wall:.1f} s: NDCG@10 {findings.quality[backtest.LM]['NDCG@10']:.4f}, "
        f"{len(figures)} charts -> {html_path}"
    )
    return {"predictions": predictions_path, "html": html_path, "json": json_path, "document": document}
