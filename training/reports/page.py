"""The report's outputs: report.json (every number) and report.html (the jinja2 template, charts inline)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2

from recsys.durable import atomic_write, atomic_write_text
from training.reports.backtest import LM, Findings
from training.reports.data import ReportData
from training.reports.figures import Figure
from training.reports.predictions import CANDIDATES, Forward

TEMPLATES = Path(__file__).resolve().parent / "templates"


def document(
    data: ReportData, findings: Findings, figures: list[Figure], forward: Forward, users_predicted: int, wall_s: float
) -> dict:
    """The numbers behind the page, as written to report.json."""
    activity = findings.activity or {}
    calibration = findings.calibration
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "bundle_version": data.engine.version,
        "segment": data.segment_label,
        "events": data.overview,
        "users_predicted": users_predicted,
        "users_in_backtest": len(data.holdout),
        "holdout_users": data.holdout_users,  # more than users_in_backtest: the back-test ran on a fixed sample
        "predictions_method": forward.method,
        "candidates": CANDIDATES if forward.method == "candidates" else None,
        "k": data.k,
        "quality": findings.quality,
        "activity": {key: value for key, value in activity.items() if key != "bins"} or None,
        "calibration": {
            "ece": calibration["bins"]["ece"],
            "expected_hits": calibration["expected_hits"],
            "actual_hits": calibration["actual_hits"],
        },
        "coverage": findings.exposure["coverage"],
        "cold_start": findings.cold,
        "audits": findings.audits,
        "rising": findings.rising,
        "nights": findings.nights,
        "figures": [{"id": f["id"], "title": f["title"], "takeaway": f["takeaway"]} for f in figures],
        "wall_s": round(wall_s, 1),
    }


def render_html(doc: dict[str, Any], figures: list[Figure], period_days: float, real_time: bool) -> str:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["html", "j2"])
    )
    sections: dict[str, list[dict[str, Any]]] = {}
    for f in figures:
        sections.setdefault(f["section"], []).append({**f, "svg": jinja2.utils.markupsafe.Markup(f["svg"])})
    events = doc["events"]
    return env.get_template("behaviour_report.html.j2").render(
        doc=doc,
        sections=sections,
        period=period_days,
        real_time=real_time,
        t_min=_date(events["t_min"]) if real_time else None,
        t_max=_date(events["t_max"]) if real_time else None,
        lm=doc["quality"][LM],
    )


def write_page(
    out: Path, doc: dict[str, Any], figures: list[Figure], period_days: float, real_time: bool
) -> tuple[Path, Path]:
    """Write report.html and report.json into `out`; returns their paths."""
    text = render_html(doc, figures, period_days, real_time)
    html = atomic_write(out / "report.html", lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return html, atomic_write_text(out / "report.json", json.dumps(doc, indent=2, default=str))


def _date(ts: int) -> str:
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d")
