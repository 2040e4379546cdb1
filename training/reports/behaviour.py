"""`recsys report behaviour`: what the model predicts users will do, for analysts and product managers.

Inputs: a bundle (what production serves: ONNX user encoder + item embeddings, so no torch here), the
events (partitioned parquet read with polars lazy scans — the nightly job's lake — or a prepared dataset),
optional user attributes (MovieLens `users.dat` or any csv/parquet with user_id) and the nightly job's run
history. Outputs, in one folder:

- `predictions.parquet`: per user, the top-k next items with scores and probabilities (the model's softmax
  over the items the user has not had: the same distribution it was trained to predict), the predicted
  category distribution of the next item (top 3), and, where the events carry real timestamps, the
  predicted chance the user is active in the next period (a logistic model of recency and frequency);
- `report.html`: one self-contained page (inline SVG, no external resources): quality vs baselines and
  previous nights, calibration on the holdout, hit rate by user activity and item popularity, catalogue
  coverage and popularity bias, rising items and categories, cold start, and a bias audit by user group;
- `report.json`: every number of the page, for machines and tests.

Backtest numbers use the evaluation protocol's test split (each user's last event held out, history items
masked, full ranking); forward predictions use each user's whole history.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from recsys.data import lake
from recsys.data.sequences import HoldoutSet, build_sequences, leave_one_out
from recsys.data.vocab import ItemVocab
from recsys.evaluate import evaluate
from recsys.metrics import ranking_metrics, target_ranks, top_k
from recsys.models.popularity import PopularityRecommender
from training.reports import charts
from training.reports.activity import ActivityModel, activity_features, activity_labels, reliability

TEMPLATES = Path(__file__).resolve().parent / "templates"
MOVIELENS_AGE = {
    "1": "Under 18",
    "18": "18-24",
    "25": "25-34",
    "35": "35-44",
    "45": "45-49",
    "50": "50-55",
    "56": "56+",
}
MAX_GROUPS = 12  # attributes with more distinct values than this are not audited (IDs, zip codes)


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


# -- inputs ------------------------------------------------------------------------------------------------
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
        users = (
            pl.read_lines(path)
            .filter(pl.col("line") != "")
            .select(
                parts.list.get(0).alias("user_id"),
                parts.list.get(1).replace({"F": "female", "M": "male"}).alias("gender"),
                parts.list.get(2).replace(MOVIELENS_AGE).alias("age"),
            )
        )
        return users
    frame = (
        pl.read_parquet(path) if path.suffix.lower() in {".parquet", ".pq"} else pl.read_csv(path, infer_schema=False)
    )
    if "user_id" not in frame.columns:
        raise ValueError(f"{path} has no user_id column (found {frame.columns})")
    return frame.select(pl.all().cast(pl.String))


def parse_segment(segment: list[str], users: pl.DataFrame | None) -> tuple[set[str] | None, str]:
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


def item_categories(catalogue: pl.DataFrame | None, vocab: ItemVocab) -> tuple[list[str], np.ndarray]:
    """Category names and an (n_items, n_categories) matrix; an item in g categories gives 1/g to each.

    MovieLens genres are pipe-separated; category paths ("A > B > C") keep their most specific part.
    """
    if catalogue is None or "category" not in catalogue.columns:
        return [], np.zeros((len(vocab), 0), dtype=np.float32)
    lookup = dict(zip(catalogue["item_id"].cast(pl.String).to_list(), catalogue["category"].to_list(), strict=True))
    per_item = []
    for item_id in vocab.item_ids:
        raw = lookup.get(item_id) or ""
        parts = [p.split(">")[-1].strip() for p in raw.split("|") if p.strip()]
        per_item.append(parts)
    names = sorted({p for parts in per_item for p in parts})
    index = {name: i for i, name in enumerate(names)}
    matrix = np.zeros((len(vocab), len(names)), dtype=np.float32)
    for row, parts in enumerate(per_item):
        for p in parts:
            matrix[row, index[p]] += 1.0 / len(parts)
    return names, matrix


# -- scoring -------------------------------------------------------------------------------------------------
def masked_softmax(scores: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Probabilities over the items not masked (the ones the user has not had)."""
    scores = np.where(mask, -np.inf, scores)
    top = scores.max(axis=1, keepdims=True)
    exp = np.exp(scores - top)
    return exp / exp.sum(axis=1, keepdims=True)


def _history_mask(histories: list[np.ndarray], n_items: int) -> np.ndarray:
    mask = np.zeros((len(histories), n_items), dtype=bool)
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    if len(rows):
        mask[rows, np.concatenate(histories)] = True
    return mask


def score_users(engine: Any, histories: list[np.ndarray], k: int, batch_size: int, progress: Progress, label: str):
    """Top-k, their probabilities and the full probability rows' category mass, batched, with a progress bar."""
    embeddings = engine.index.embeddings()
    task = progress.add_task(label, total=len(histories))
    for start in range(0, len(histories), batch_size):
        batch = histories[start : start + batch_size]
        scores = engine.user_vectors(batch) @ embeddings.T
        mask = _history_mask(batch, embeddings.shape[0])
        yield start, scores, mask
        progress.advance(task, len(batch))


# -- the report ----------------------------------------------------------------------------------------------
def _wilson(hits: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return 0.0, 0.0
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _gini(counts: np.ndarray) -> float:
    values = np.sort(np.asarray(counts, dtype=np.float64))
    if values.sum() == 0:
        return 0.0
    n = len(values)
    return float((2 * np.arange(1, n + 1) - n - 1).dot(values) / (n * values.sum()))


def _deciles(counts: np.ndarray) -> np.ndarray:
    """Popularity decile of every item, 1 (least interacted with) .. 10 (most), by rank."""
    order = np.argsort(counts, kind="stable")
    deciles = np.empty(len(counts), dtype=np.int64)
    deciles[order] = 1 + (np.arange(len(counts)) * 10) // max(1, len(counts))
    return deciles


def _activity_bins(lengths: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Up to five activity levels by history length (quintile edges; empty levels dropped), labelled lo–hi."""
    edges = np.unique(np.quantile(lengths, [0.2, 0.4, 0.6, 0.8]).round())
    raw = np.digitize(lengths, edges, right=True)
    used = np.unique(raw)
    bins = np.searchsorted(used, raw)
    labels = []
    for b in range(len(used)):
        members = lengths[bins == b]
        lo, hi = int(members.min()), int(members.max())
        labels.append(f"{lo}–{hi}" if lo < hi else f"{lo}")
    return bins, labels


def _pct(x: float) -> str:
    return f"{x:.1%}"


def build_report(cfg: ReportConfig, console: Console | None = None) -> dict[str, Any]:
    from recsys.bundle.reader import BundleRecommender
    from training.lm.distributed import default_threads

    console = console or Console()
    started = time.perf_counter()
    cfg.out.mkdir(parents=True, exist_ok=True)
    engine = BundleRecommender(cfg.bundles, threads=default_threads())
    vocab, n_items, k = engine.vocab, engine.n_items, min(cfg.k, engine.n_items)
    users_table = load_users(cfg.users)
    segment_users, segment_label = parse_segment(cfg.segment, users_table)

    # -- the data, through lazy scans (aggregations run in polars, on partitioned parquet) ----------------
    events_lazy = scan_events(cfg.events)
    known = pl.Series(vocab.item_ids, dtype=pl.String)
    overview = (
        events_lazy.select(
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
    events = events_lazy.select("user_id", "item_id", "timestamp", pl.col("_order").alias("row")).collect()
    real_time = overview["t_min"] > 10**8  # epoch seconds (after 1973), not positions in a sequence file
    sequences = build_sequences(events, vocab)
    split = leave_one_out(sequences, engine.max_len)
    train_counts = np.bincount(np.concatenate(split.train.items), minlength=n_items).astype(np.float64)
    deciles = _deciles(train_counts)
    popularity_pct = np.empty(n_items)
    popularity_pct[np.argsort(train_counts, kind="stable")] = np.arange(n_items) / max(1, n_items - 1)
    head = train_counts >= np.quantile(train_counts, 0.8)  # the most popular fifth of the catalogue
    category_names, category_matrix = item_categories(engine.catalogue, vocab)

    def in_segment(user_ids: list[str]) -> np.ndarray:
        if segment_users is None:
            return np.arange(len(user_ids))
        return np.array([i for i, u in enumerate(user_ids) if u in segment_users], dtype=np.int64)

    chosen = in_segment(split.test.user_ids)
    holdout = HoldoutSet(
        [split.test.user_ids[i] for i in chosen], [split.test.inputs[i] for i in chosen], split.test.targets[chosen]
    )
    forward_idx = in_segment(sequences.user_ids)
    forward_users = [sequences.user_ids[i] for i in forward_idx]
    forward_hist = [sequences.items[i][-engine.max_len :] for i in forward_idx]
    if not len(holdout) and not forward_users:
        raise ValueError(f"no user of {segment_label} has events on items the bundle knows")

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    with progress:
        # backtest: every user's last event held out
        ranks, top_rows, p_top, hit_top, p_target = [], [], [], [], []
        for start, scores, mask in score_users(
            engine, holdout.inputs, k, cfg.batch_size, progress, "backtest on the holdout"
        ):
            targets = holdout.targets[start : start + len(scores)]
            ranks.append(target_ranks(scores, targets, masked=mask))
            probs = masked_softmax(scores, mask)
            top = top_k(np.where(mask, -np.inf, scores), k)
            top_rows.append(top)
            p_top.append(np.take_along_axis(probs, top, axis=1))
            hit_top.append(top == targets[:, None])
            p_target.append(probs[np.arange(len(targets)), targets])
        # forward: the next items after each user's whole history
        items_out, scores_out, probs_out, cats_out, catp_out = [], [], [], [], []
        slot_counts = np.zeros(n_items, dtype=np.int64)
        for _, scores, mask in score_users(engine, forward_hist, k, cfg.batch_size, progress, "predictions"):
            probs = masked_softmax(scores, mask)
            top = top_k(np.where(mask, -np.inf, scores), k)
            np.add.at(slot_counts, top.ravel(), 1)
            items_out += [[vocab.item_ids[i] for i in row] for row in top]
            scores_out += np.take_along_axis(scores, top, axis=1).astype(np.float32).tolist()
            probs_out += np.take_along_axis(probs, top, axis=1).astype(np.float32).tolist()
            if category_names:
                mass = probs @ category_matrix
                best = np.argsort(-mass, axis=1)[:, :3]
                cats_out += [[category_names[c] for c in row] for row in best]
                catp_out += np.take_along_axis(mass, best, axis=1).astype(np.float32).tolist()
    ranks_all = np.concatenate(ranks) if ranks else np.zeros(0)
    top_all = np.concatenate(top_rows) if top_rows else np.zeros((0, k), dtype=np.int64)
    p_top_all = np.concatenate(p_top) if p_top else np.zeros((0, k))
    hit_all = np.concatenate(hit_top) if hit_top else np.zeros((0, k), dtype=bool)
    lm_metrics = ranking_metrics(ranks_all)
    lm_metrics["coverage@10"] = len(np.unique(top_all[:, :10])) / n_items if len(top_all) else 0.0
    hits10 = ranks_all <= 10
    ndcg10 = np.where(hits10, 1.0 / np.log2(ranks_all + 1.0), 0.0)

    # -- baselines, same holdout ----------------------------------------------------------------------------
    quality = {"generative LM (this bundle)": lm_metrics}
    for name in cfg.baselines:
        if name == "popularity":
            model = PopularityRecommender().fit(split.train, n_items)
        elif name == "als":
            from recsys.models.als import ALSRecommender

            model = ALSRecommender().fit(split.train, n_items)
        else:
            raise ValueError(f"unknown baseline {name!r}: popularity | als")
        quality[name] = evaluate(model, holdout)["masked"] if len(holdout) else ranking_metrics(np.zeros(0))
    best_baseline = max(
        (n for n in quality if n != "generative LM (this bundle)"), key=lambda n: quality[n]["NDCG@10"], default=None
    )

    # -- activity in the next period --------------------------------------------------------------------------
    activity: dict[str, Any] | None = None
    p_active: dict[str, float] = {}
    if real_time:
        period = cfg.period_days * 86_400
        t_max = overview["t_max"]
        fit_at, check_at = t_max - 2 * period, t_max - period
        model = ActivityModel.fit(
            activity_features(events_lazy, fit_at, period), activity_labels(events_lazy, fit_at, period)
        )
        check = activity_features(events_lazy, check_at, period)
        labels = activity_labels(events_lazy, check_at, period)
        predicted = model.predict(check)
        outcome = check.select(pl.col("user_id").is_in(labels.implode())).to_series().to_numpy()
        bins = reliability(predicted, outcome)
        final = ActivityModel.fit(check, labels)
        now = activity_features(events_lazy, t_max, period)
        p_active = dict(zip(now["user_id"].to_list(), final.predict(now).tolist(), strict=True))
        activity = {
            "period_days": cfg.period_days,
            "base_rate_backtest": float(outcome.mean()) if len(outcome) else 0.0,
            "mean_predicted_backtest": float(predicted.mean()) if len(predicted) else 0.0,
            "brier": float(np.mean((predicted - outcome) ** 2)) if len(outcome) else None,
            "ece": bins["ece"],
            "bins": bins,
            "expected_active_next_period": float(sum(p_active.get(u, 0.0) for u in forward_users)),
            "users_scored": len(now),
        }

    # -- predictions.parquet ----------------------------------------------------------------------------------
    cold_users = sorted(
        set(events["user_id"].unique().to_list()) - set(sequences.user_ids)
    )  # every event on an item the bundle does not know: popularity fallback
    if segment_users is not None:
        cold_users = [u for u in cold_users if u in segment_users]
    popular = np.argsort(-train_counts, kind="stable")[:k]
    share = (train_counts[popular] / max(1.0, train_counts.sum())).astype(np.float32).tolist()
    predictions = pl.DataFrame(
        {
            "user_id": forward_users + cold_users,
            "fallback": [False] * len(forward_users) + [True] * len(cold_users),
            "items": items_out + [[vocab.item_ids[i] for i in popular]] * len(cold_users),
            "scores": scores_out + [train_counts[popular].astype(np.float32).tolist()] * len(cold_users),
            "probabilities": probs_out + [share] * len(cold_users),
            "top_categories": (cats_out or [[]] * len(forward_users)) + [[]] * len(cold_users),
            "category_probabilities": (catp_out or [[]] * len(forward_users)) + [[]] * len(cold_users),
            "p_active_next_period": [p_active.get(u) for u in forward_users + cold_users] if real_time else None,
            "history_length": [len(h) for h in forward_hist] + [0] * len(cold_users),
        },
        schema={
            "user_id": pl.String,
            "fallback": pl.Boolean,
            "items": pl.List(pl.String),
            "scores": pl.List(pl.Float32),
            "probabilities": pl.List(pl.Float32),
            "top_categories": pl.List(pl.String),
            "category_probabilities": pl.List(pl.Float32),
            "p_active_next_period": pl.Float64,
            "history_length": pl.Int64,
        },
    )
    predictions_path = cfg.out / "predictions.parquet"
    tmp = cfg.out / ".predictions.parquet.tmp"
    predictions.write_parquet(tmp)
    os.replace(tmp, predictions_path)

    # -- figures ------------------------------------------------------------------------------------------------
    figures: list[dict[str, Any]] = []

    def figure(fid: str, title: str, svg: str, takeaway: str, section: str, table: dict | None = None) -> None:
        figures.append(
            {"id": fid, "title": title, "svg": svg, "takeaway": takeaway, "section": section, "table": table}
        )

    names = list(quality)
    lm_ndcg = lm_metrics["NDCG@10"]
    if best_baseline:
        base = quality[best_baseline]["NDCG@10"]
        lift = f"{lm_ndcg / base - 1:+.0%}" if base else "n/a"
        takeaway = (
            f"The model ranks the next item in the top 10 for {_pct(lm_metrics['HR@10'])} of users; NDCG@10 "
            f"{lm_ndcg:.3f} is {lift} vs the best baseline ({best_baseline}, {base:.3f})."
        )
    else:
        takeaway = f"NDCG@10 {lm_ndcg:.3f}, HR@10 {_pct(lm_metrics['HR@10'])} on the holdout."
    figure(
        "quality",
        "Model quality vs baselines (holdout: each user's last event)",
        charts.bar_chart(
            ["HR@10", "NDCG@10", "HR@50", "MRR"],
            {n: [quality[n][m] for m in ("HR@10", "NDCG@10", "HR@50", "MRR")] for n in names},
            title="Model quality vs baselines",
            x_label="metric (full ranking, history items masked)",
            y_label="score",
        ),
        takeaway,
        "Quality",
    )

    nights = _night_history(cfg.nightly_dir)
    if nights:
        labels = [n["label"] for n in nights]
        promoted = [n["promoted"] for n in nights]
        series = {
            "candidate": [n["candidate"] for n in nights],
            "production at the time": [n["production"] for n in nights],
            "popularity": [n["popularity"] for n in nights],
        }
        refused = sum(1 for n in nights if n["status"] == "refused")
        last = nights[-1]
        figure(
            "nights",
            "Quality over previous nights (each night's own holdout)",
            charts.line_chart(
                labels,
                series,
                title="Test NDCG@10 per nightly run",
                x_label="nightly run",
                y_label="NDCG@10",
                markers=promoted,
                marker_label="promoted",
            ),
            f"{len(nights)} nightly run(s) with a candidate: {sum(promoted)} promoted, {refused} refused by the gate; "
            f"the last candidate scored {last['candidate']:.3f}"
            + (f" vs production {last['production']:.3f}." if last["production"] is not None else "."),
            "Quality",
        )

    flat_p, flat_hit = p_top_all.ravel(), hit_all.ravel()
    item_bins = reliability(flat_p, flat_hit.astype(np.float64), n_bins=10, log=True)
    predicted_hits, actual_hits = float(flat_p.sum()), float(flat_hit.sum())
    direction = "over" if predicted_hits > actual_hits else "under"
    figure(
        "calibration",
        f"Calibration: predicted probability of each top-{k} item vs what users did next",
        charts.reliability_chart(
            item_bins["predicted"],
            item_bins["observed"],
            item_bins["counts"],
            title="Next-item probability calibration",
        ),
        f"Summed over users, the model expected {predicted_hits:,.0f} of its top-{k} items to be the next event and "
        f"{actual_hits:,.0f} were: it {direction}-estimates by {abs(predicted_hits / max(actual_hits, 1) - 1):.0%} "
        f"(expected calibration error {item_bins['ece']:.4f}).",
        "Calibration",
    )
    if activity is not None:
        b = activity["bins"]
        figure(
            "activity-calibration",
            f"Calibration: chance of activity in the next {cfg.period_days:g} days",
            charts.reliability_chart(b["predicted"], b["observed"], b["counts"], title="Activity calibration"),
            f"On the last {cfg.period_days:g} days (not used to fit), {_pct(activity['base_rate_backtest'])} of "
            f"users were active vs {_pct(activity['mean_predicted_backtest'])} predicted; expected active users "
            f"next period: {activity['expected_active_next_period']:,.0f} of {len(forward_users):,}.",
            "Calibration",
        )

    if len(holdout):
        lengths = np.array([len(h) for h in holdout.inputs])
        act_bins, act_labels = _activity_bins(lengths)
        act_hr = [float(hits10[act_bins == b].mean()) if (act_bins == b).any() else 0.0 for b in range(len(act_labels))]
        act_n = [int((act_bins == b).sum()) for b in range(len(act_labels))]
        figure(
            "by-activity",
            "Hit rate by user activity level",
            charts.bar_chart(
                [f"{label} ({n:,})" for label, n in zip(act_labels, act_n, strict=True)],
                {"HR@10": act_hr},
                title="HR@10 by history length",
                x_label="events in the user's history (users)",
                y_label="HR@10",
                percent=True,
            ),
            f"Users with the shortest histories hit {_pct(act_hr[0])}, the most active {_pct(act_hr[-1])}.",
            "Who it works for",
        )
        target_dec = deciles[holdout.targets]
        dec_hr = [float(hits10[target_dec == d].mean()) if (target_dec == d).any() else 0.0 for d in range(1, 11)]
        figure(
            "by-popularity",
            "Hit rate by popularity decile of the item the user actually chose next",
            charts.bar_chart(
                [f"D{d}" for d in range(1, 11)],
                {"HR@10": dec_hr},
                title="HR@10 by target item popularity decile",
                x_label="item popularity decile (D1 least, D10 most interacted with)",
                y_label="HR@10",
                percent=True,
            ),
            f"When the next item is a top-decile item the model finds it {_pct(dec_hr[-1])} of the time; "
            f"for the bottom half of the catalogue {_pct(float(np.mean(dec_hr[:5])))}.",
            "Who it works for",
        )

    interactions_share = [float(train_counts[deciles == d].sum() / max(1, train_counts.sum())) for d in range(1, 11)]
    rec_share = [float(slot_counts[deciles == d].sum() / max(1, slot_counts.sum())) for d in range(1, 11)]
    coverage = float((slot_counts > 0).mean())
    figure(
        "popularity-bias",
        f"Popularity bias: where the top-{k} recommendations go, by item popularity decile",
        charts.bar_chart(
            [f"D{d}" for d in range(1, 11)],
            {"share of interactions": interactions_share, "share of recommendations": rec_share},
            title="Interactions vs recommendations by item popularity decile",
            x_label="item popularity decile (D1 least, D10 most interacted with)",
            y_label="share",
            percent=True,
        ),
        f"The top decile gets {_pct(rec_share[-1])} of recommendation slots vs {_pct(interactions_share[-1])} of "
        f"interactions; {_pct(coverage)} of the catalogue is recommended to someone (exposure Gini "
        f"{_gini(slot_counts):.2f}).",
        "Catalogue",
    )

    rising = _rising(events_lazy, engine.catalogue, overview["t_max"], cfg.period_days * 86_400 if real_time else None)
    if rising["items"]:
        top_items = rising["items"]
        figure(
            "rising-items",
            f"Top rising items: last {rising['window']} vs the one before",
            charts.hbar_chart(
                [r["label"] for r in top_items],
                {"previous": [r["previous"] for r in top_items], "last": [r["recent"] for r in top_items]},
                title="Rising items",
                x_label="events in the window",
            ),
            f"{top_items[0]['label']} grew most: {top_items[0]['previous']:,} → {top_items[0]['recent']:,} events.",
            "Trends",
        )
    if rising["categories"]:
        top_cats = rising["categories"]
        figure(
            "rising-categories",
            f"Rising categories: last {rising['window']} vs the one before",
            charts.hbar_chart(
                [r["label"] for r in top_cats],
                {"previous": [r["previous"] for r in top_cats], "last": [r["recent"] for r in top_cats]},
                title="Rising categories",
                x_label="events in the window (an item in g categories counts 1/g in each)",
            ),
            f"{top_cats[0]['label']} gained most ({top_cats[0]['previous']:,.0f} → {top_cats[0]['recent']:,.0f}).",
            "Trends",
        )

    all_users = overview["users"]
    short = sum(1 for s in sequences.items if len(s) < 3)
    cold_items = float((train_counts == 0).mean())
    cold_slots = float(slot_counts[train_counts < 5].sum() / max(1, slot_counts.sum()))
    cold = {
        "users with no item the model knows (popularity fallback)": len(cold_users) / max(1, all_users),
        "users with fewer than 3 known events": short / max(1, all_users),
        "events on items the bundle does not know": overview["unknown_item_events"] / max(1, overview["events"]),
        "catalogue items with no training event": cold_items,
        "recommendation slots on items with < 5 events": cold_slots,
    }
    figure(
        "cold-start",
        "Cold start: users and items the model knows little about",
        charts.hbar_chart(
            list(cold), {"share": list(cold.values())}, title="Cold-start shares", x_label="share", percent=True
        ),
        f"{_pct(cold['users with no item the model knows (popularity fallback)'])} of users get the popularity "
        f"fallback; {_pct(cold_items)} of items have no training event and receive {_pct(cold_slots)} of "
        "recommendation slots together with the other rare items.",
        "Catalogue",
    )

    audits = []
    if users_table is not None and len(holdout):
        per_user = pl.DataFrame(
            {
                "user_id": holdout.user_ids,
                "hit": hits10.astype(np.float64),
                "ndcg": ndcg10,
                "tail": (~head[top_all[:, :10]]).mean(axis=1),
                "pop": popularity_pct[top_all[:, :10]].mean(axis=1),
            }
        ).join(users_table, on="user_id", how="left")
        for column in [c for c in users_table.columns if c != "user_id"]:
            groups = per_user.filter(pl.col(column).is_not_null())
            if groups.is_empty() or groups[column].n_unique() > MAX_GROUPS or groups[column].n_unique() < 2:
                continue
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
                lo, hi = _wilson(r["hits"], r["users"])
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
                f"HR@10 gap {gap * 100:.1f} points: {best['group']} {_pct(best['HR@10'])} vs {worst['group']} "
                f"{_pct(worst['HR@10'])} (ratio {worst['HR@10'] / best['HR@10'] if best['HR@10'] else 0:.2f}); "
                + ("the 95% intervals do not overlap." if separated else "within the 95% intervals: not a clear gap.")
            )
            exposure_gap = max(r["long_tail_share"] for r in rows) - min(r["long_tail_share"] for r in rows)
            audits.append(
                {
                    "attribute": column,
                    "groups": rows,
                    "hr_gap": gap,
                    "separated": separated,
                    "long_tail_gap": exposure_gap,
                    "statement": statement,
                }
            )
            figure(
                f"audit-{column}",
                f"Bias audit by {column}: hit rate and exposure per group",
                charts.bar_chart(
                    [f"{r['group']} ({r['users']:,})" for r in rows],
                    {
                        "HR@10": [r["HR@10"] for r in rows],
                        "long-tail share of recommendations": [r["long_tail_share"] for r in rows],
                    },
                    title=f"HR@10 and exposure by {column}",
                    x_label=f"{column} (users)",
                    y_label="share",
                    percent=True,
                ),
                statement + f" Long-tail exposure differs by {exposure_gap * 100:.1f} points between groups.",
                "Bias audit",
                table={
                    "columns": ["group", "users", "HR@10", "95% CI", "NDCG@10", "long-tail share", "popularity pct"],
                    "rows": [
                        [
                            r["group"],
                            f"{r['users']:,}",
                            _pct(r["HR@10"]),
                            f"{_pct(r['ci'][0])}–{_pct(r['ci'][1])}",
                            f"{r['NDCG@10']:.3f}",
                            _pct(r["long_tail_share"]),
                            f"{r['popularity_percentile']:.2f}",
                        ]
                        for r in rows
                    ],
                },
            )

    wall = time.perf_counter() - started
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bundle_version": engine.version,
        "segment": segment_label,
        "events": overview,
        "users_predicted": predictions.height,
        "users_in_backtest": len(holdout),
        "k": k,
        "quality": quality,
        "activity": {k2: v for k2, v in (activity or {}).items() if k2 != "bins"} or None,
        "calibration": {"ece": item_bins["ece"], "expected_hits": predicted_hits, "actual_hits": actual_hits},
        "coverage": coverage,
        "cold_start": cold,
        "audits": audits,
        "rising": rising,
        "nights": nights,
        "figures": [{"id": f["id"], "title": f["title"], "takeaway": f["takeaway"]} for f in figures],
        "wall_s": round(wall, 1),
    }
    html = _render_html(document, figures, cfg, real_time)
    html_path = cfg.out / "report.html"
    tmp_html = cfg.out / ".report.html.tmp"
    tmp_html.write_text(html, encoding="utf-8")
    os.replace(tmp_html, html_path)
    import json

    (cfg.out / "report.json").write_text(json.dumps(document, indent=2, default=str))
    console.print(
        f"report over {predictions.height:,} users in {wall:.1f} s: NDCG@10 {lm_ndcg:.4f}, "
        f"{len(figures)} charts -> {html_path}"
    )
    return {"predictions": predictions_path, "html": html_path, "json": cfg.out / "report.json", "document": document}


def _night_history(nightly_dir: Path | None) -> list[dict[str, Any]]:
    from training.nightly.job import history

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


def _rising(events: pl.LazyFrame, catalogue: pl.DataFrame | None, t_max: int, period: float | None) -> dict[str, Any]:
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


def _render_html(document: dict[str, Any], figures: list[dict[str, Any]], cfg: ReportConfig, real_time: bool) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["html", "j2"])
    )
    sections: dict[str, list[dict[str, Any]]] = {}
    for f in figures:
        sections.setdefault(f["section"], []).append({**f, "svg": jinja2.utils.markupsafe.Markup(f["svg"])})
    ev = document["events"]
    return env.get_template("behaviour_report.html.j2").render(
        doc=document,
        sections=sections,
        period=cfg.period_days,
        real_time=real_time,
        t_min=_date(ev["t_min"]) if real_time else None,
        t_max=_date(ev["t_max"]) if real_time else None,
        lm=document["quality"]["generative LM (this bundle)"],
    )


def _date(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d")
