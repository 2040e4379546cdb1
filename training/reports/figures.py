"""The report's figures: each a chart (charts.py), a one-line takeaway and the page section it belongs to.

`build_figures` returns them in page order; a section appears where its first figure does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from training.reports import charts
from training.reports.backtest import LM, Findings
from training.reports.charts import pct

Figure = dict[str, Any]  # id, title, svg, takeaway, section, table
DECILES = [f"D{d}" for d in range(1, 11)]
DECILE_AXIS = "item popularity decile (D1 least, D10 most interacted with)"


def figure(fid: str, title: str, svg: str, takeaway: str, section: str, table: dict | None = None) -> Figure:
    return {"id": fid, "title": title, "svg": svg, "takeaway": takeaway, "section": section, "table": table}


def build_figures(f: Findings) -> list[Figure]:
    return [
        quality_figure(f),
        *nights_figure(f),
        calibration_figure(f),
        *activity_figure(f),
        *who_figures(f),
        popularity_bias_figure(f),
        *rising_figures(f),
        cold_start_figure(f),
        *[audit_figure(audit) for audit in f.audits],
    ]


def quality_figure(f: Findings) -> Figure:
    lm = f.quality[LM]
    lm_ndcg = lm["NDCG@10"]
    if f.best_baseline:
        base = f.quality[f.best_baseline]["NDCG@10"]
        lift = f"{lm_ndcg / base - 1:+.0%}" if base else "n/a"
        takeaway = (
            f"The model ranks the next item in the top 10 for {pct(lm['HR@10'])} of users; NDCG@10 "
            f"{lm_ndcg:.3f} is {lift} vs the best baseline ({f.best_baseline}, {base:.3f})."
        )
    else:
        takeaway = f"NDCG@10 {lm_ndcg:.3f}, HR@10 {pct(lm['HR@10'])} on the holdout."
    metrics = ("HR@10", "NDCG@10", "HR@50", "MRR")
    return figure(
        "quality",
        "Model quality vs baselines (holdout: each user's last event)",
        charts.bar_chart(
            list(metrics),
            {n: [f.quality[n][m] for m in metrics] for n in f.quality},
            title="Model quality vs baselines",
            x_label="metric (full ranking, history items masked)",
            y_label="score",
        ),
        takeaway,
        "Quality",
    )


def nights_figure(f: Findings) -> list[Figure]:
    nights = f.nights
    if not nights:
        return []
    promoted = [n["promoted"] for n in nights]
    series = {
        "candidate": [n["candidate"] for n in nights],
        "production at the time": [n["production"] for n in nights],
        "popularity": [n["popularity"] for n in nights],
    }
    refused = sum(1 for n in nights if n["status"] == "refused")
    last = nights[-1]
    chart = charts.line_chart(
        [n["label"] for n in nights],
        series,
        title="Test NDCG@10 per nightly run",
        x_label="nightly run",
        y_label="NDCG@10",
        markers=promoted,
        marker_label="promoted",
    )
    takeaway = (
        f"{len(nights)} nightly run(s) with a candidate: {sum(promoted)} promoted, {refused} refused by the gate; "
        f"the last candidate scored {last['candidate']:.3f}"
        + (f" vs production {last['production']:.3f}." if last["production"] is not None else ".")
    )
    return [figure("nights", "Quality over previous nights (each night's own holdout)", chart, takeaway, "Quality")]


def calibration_figure(f: Findings) -> Figure:
    bins, expected, actual, k = f.calibration["bins"], f.calibration["expected_hits"], f.calibration["actual_hits"], f.k
    direction = "over" if expected > actual else "under"
    return figure(
        "calibration",
        f"Calibration: predicted probability of each top-{k} item vs what users did next",
        charts.reliability_chart(
            bins["predicted"], bins["observed"], bins["counts"], title="Next-item probability calibration"
        ),
        f"Summed over users, the model expected {expected:,.0f} of its top-{k} items to be the next event and "
        f"{actual:,.0f} were: it {direction}-estimates by {abs(expected / max(actual, 1) - 1):.0%} "
        f"(expected calibration error {bins['ece']:.4f}).",
        "Calibration",
    )


def activity_figure(f: Findings) -> list[Figure]:
    activity, days = f.activity, f.period_days
    if activity is None:
        return []
    b = activity["bins"]
    return [
        figure(
            "activity-calibration",
            f"Calibration: chance of activity in the next {days:g} days",
            charts.reliability_chart(b["predicted"], b["observed"], b["counts"], title="Activity calibration"),
            f"On the last {days:g} days (not used to fit), {pct(activity['base_rate_backtest'])} of "
            f"users were active vs {pct(activity['mean_predicted_backtest'])} predicted; expected active users "
            f"next period: {activity['expected_active_next_period']:,.0f} of {f.forward_users:,}.",
            "Calibration",
        )
    ]


def who_figures(f: Findings) -> list[Figure]:
    """Hit rate by user activity level and by popularity of the item chosen next (needs a holdout)."""
    if f.by_activity is None or f.by_popularity is None:
        return []
    act, dec_hr = f.by_activity, f.by_popularity
    by_activity = figure(
        "by-activity",
        "Hit rate by user activity level",
        charts.bar_chart(
            [f"{label} ({n:,})" for label, n in zip(act["labels"], act["users"], strict=True)],
            {"HR@10": act["hr"]},
            title="HR@10 by history length",
            x_label="events in the user's history (users)",
            y_label="HR@10",
            percent=True,
        ),
        f"Users with the shortest histories hit {pct(act['hr'][0])}, the most active {pct(act['hr'][-1])}.",
        "Who it works for",
    )
    by_popularity = figure(
        "by-popularity",
        "Hit rate by popularity decile of the item the user actually chose next",
        charts.bar_chart(
            DECILES,
            {"HR@10": dec_hr},
            title="HR@10 by target item popularity decile",
            x_label=DECILE_AXIS,
            y_label="HR@10",
            percent=True,
        ),
        f"When the next item is a top-decile item the model finds it {pct(dec_hr[-1])} of the time; "
        f"for the bottom half of the catalogue {pct(float(np.mean(dec_hr[:5])))}.",
        "Who it works for",
    )
    return [by_activity, by_popularity]


def popularity_bias_figure(f: Findings) -> Figure:
    e = f.exposure
    interactions, recommendations = e["interactions_share"], e["recommendations_share"]
    return figure(
        "popularity-bias",
        f"Popularity bias: where the top-{f.k} recommendations go, by item popularity decile",
        charts.bar_chart(
            DECILES,
            {"share of interactions": interactions, "share of recommendations": recommendations},
            title="Interactions vs recommendations by item popularity decile",
            x_label=DECILE_AXIS,
            y_label="share",
            percent=True,
        ),
        f"The top decile gets {pct(recommendations[-1])} of recommendation slots vs {pct(interactions[-1])} of "
        f"interactions; {pct(e['coverage'])} of the catalogue is recommended to someone (exposure Gini "
        f"{e['gini']:.2f}).",
        "Catalogue",
    )


def rising_figures(f: Findings) -> list[Figure]:
    window, out = f.rising["window"], []
    if items := f.rising["items"]:
        out.append(
            figure(
                "rising-items",
                f"Top rising items: last {window} vs the one before",
                charts.hbar_chart(
                    [r["label"] for r in items],
                    {"previous": [r["previous"] for r in items], "last": [r["recent"] for r in items]},
                    title="Rising items",
                    x_label="events in the window",
                ),
                f"{items[0]['label']} grew most: {items[0]['previous']:,} → {items[0]['recent']:,} events.",
                "Trends",
            )
        )
    if cats := f.rising["categories"]:
        out.append(
            figure(
                "rising-categories",
                f"Rising categories: last {window} vs the one before",
                charts.hbar_chart(
                    [r["label"] for r in cats],
                    {"previous": [r["previous"] for r in cats], "last": [r["recent"] for r in cats]},
                    title="Rising categories",
                    x_label="events in the window (an item in g categories counts 1/g in each)",
                ),
                f"{cats[0]['label']} gained most ({cats[0]['previous']:,.0f} → {cats[0]['recent']:,.0f}).",
                "Trends",
            )
        )
    return out


def cold_start_figure(f: Findings) -> Figure:
    cold = f.cold
    return figure(
        "cold-start",
        "Cold start: users and items the model knows little about",
        charts.hbar_chart(
            list(cold), {"share": list(cold.values())}, title="Cold-start shares", x_label="share", percent=True
        ),
        f"{pct(cold['users with no item the model knows (popularity fallback)'])} of users get the popularity "
        f"fallback; {pct(cold['catalogue items with no training event'])} of items have no training event and "
        f"receive {pct(cold['recommendation slots on items with < 5 events'])} of "
        "recommendation slots together with the other rare items.",
        "Catalogue",
    )


def audit_figure(audit: dict[str, Any]) -> Figure:
    column, rows = audit["attribute"], audit["groups"]
    return figure(
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
        audit["statement"]
        + f" Long-tail exposure differs by {audit['long_tail_gap'] * 100:.1f} points between groups.",
        "Bias audit",
        table={
            "columns": ["group", "users", "HR@10", "95% CI", "NDCG@10", "long-tail share", "popularity pct"],
            "rows": [
                [
                    r["group"],
                    f"{r['users']:,}",
                    pct(r["HR@10"]),
                    f"{pct(r['ci'][0])}–{pct(r['ci'][1])}",
                    f"{r['NDCG@10']:.3f}",
                    pct(r["long_tail_share"]),
                    f"{r['popularity_percentile']:.2f}",
                ]
                for r in rows
            ],
        },
    )
