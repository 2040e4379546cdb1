"""The behaviour report on the tiny synthetic data: predictions.parquet, and report.html rendered for real in
headless Chromium (every chart present and visible, no console errors, a screenshot kept as an artefact);
the whole report path runs without torch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import polars as pl
import pytest

from recsys.settings import REPO_ROOT
from training.reports.behaviour import ReportConfig, build_report
from training.reports.browser import find_chromium, render

ARTEFACT = REPO_ROOT / "var" / "test-artifacts" / "behaviour-report.png"


@pytest.fixture(scope="module")
def report_inputs(tiny_prepared, tiny_bundle, tmp_path_factory):
    prepared, _ = tiny_prepared
    root = tmp_path_factory.mktemp("report")
    # the events as hive-partitioned parquet (one folder per month), read back with polars lazy scans
    events = prepared.events.with_columns(pl.from_epoch("timestamp", time_unit="s").dt.strftime("%Y-%m").alias("month"))
    for (month,), part in events.group_by("month"):
        folder = root / "events" / f"month={month}"
        folder.mkdir(parents=True)
        part.drop("month").write_parquet(folder / "part-0.parquet")
    users = sorted(prepared.events["user_id"].unique().to_list())
    rng = np.random.default_rng(0)
    pl.DataFrame(
        {
            "user_id": users,
            "gender": rng.choice(["female", "male"], len(users)).tolist(),
            "age": rng.choice(["18-24", "25-34", "35+"], len(users)).tolist(),
        }
    ).write_csv(root / "users.csv")
    for n, (candidate, production, status) in enumerate(
        [(0.20, None, "promoted"), (0.24, 0.20, "promoted"), (0.05, 0.24, "refused"), (0.25, 0.24, "promoted")]
    ):
        run = root / "nightly" / "runs" / f"night-{n + 1}"
        run.mkdir(parents=True)
        metrics = {"candidate": {"NDCG@10": candidate}, "popularity": {"NDCG@10": 0.08}}
        metrics["production"] = {"NDCG@10": production} if production else None
        summary = {"run_id": f"night-{n + 1}", "status": status, "promoted": status == "promoted", "metrics": metrics}
        (run / "summary.json").write_text(json.dumps(summary))
    bundles, _ = tiny_bundle
    return root, bundles


def test_predictions_cover_every_user_with_probabilities_categories_and_activity(report_inputs, tiny_prepared):
    root, bundles = report_inputs
    cfg = ReportConfig(
        bundles=bundles,
        events=root / "events",
        out=root / "out",
        users=root / "users.csv",
        nightly_dir=root / "nightly",
        period_days=30,
    )
    result = build_report(cfg)
    predictions = pl.read_parquet(result["predictions"])
    prepared, _ = tiny_prepared
    assert predictions["user_id"].n_unique() == predictions.height == prepared.events["user_id"].n_unique()
    first = predictions.row(0, named=True)
    assert len(first["items"]) == len(first["scores"]) == len(first["probabilities"]) == 10
    probs = np.array(predictions["probabilities"].to_list())
    assert np.all(np.diff(probs, axis=1) <= 1e-7) and np.all(probs.sum(axis=1) <= 1 + 1e-5) and np.all(probs > 0)
    assert len(first["top_categories"]) == 3 and 0 < sum(first["category_probabilities"]) <= 1 + 1e-5
    assert predictions["p_active_next_period"].is_between(0, 1).all()

    document = result["document"]
    ids = {f["id"] for f in document["figures"]}
    assert {
        "quality",
        "nights",
        "calibration",
        "activity-calibration",
        "by-activity",
        "by-popularity",
        "popularity-bias",
        "rising-items",
        "rising-categories",
        "cold-start",
        "audit-gender",
        "audit-age",
    } <= ids
    lm = document["quality"]["generative LM (this bundle)"]
    assert lm["NDCG@10"] > document["quality"]["popularity"]["NDCG@10"]
    assert all(a["statement"].startswith("HR@10 gap") for a in document["audits"])
    assert all(r["recent"] > r["previous"] for r in document["rising"]["items"] + document["rising"]["categories"])


@pytest.mark.skipif(find_chromium() is None, reason="Chromium is not installed (make test installs it)")
def test_report_renders_in_headless_chromium_with_every_chart_visible(report_inputs, tmp_path):
    root, _ = report_inputs
    html = root / "out" / "report.html"
    document = json.loads((root / "out" / "report.json").read_text())
    page = render(html, tmp_path / "report.png")
    assert page.errors == [] and page.external == []
    rendered = {c["id"]: c for c in page.charts}
    for figure in document["figures"]:
        chart = rendered[f"chart-{figure['id']}"]
        assert chart["visible"] and chart["width"] > 300 and chart["height"] > 80, chart
        assert chart["marks"] > 3 and chart["texts"] > 3 and chart["takeaway"].startswith("Takeaway:"), chart
    assert page.screenshot is not None and page.screenshot.stat().st_size > 50_000
    ARTEFACT.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(page.screenshot, ARTEFACT)


def test_a_segment_reports_only_its_users(report_inputs):
    root, bundles = report_inputs
    cfg = ReportConfig(
        bundles=bundles,
        events=root / "events",
        out=root / "segment",
        users=root / "users.csv",
        segment=["gender=female"],
        baselines=["popularity"],
        period_days=30,
    )
    predictions = pl.read_parquet(build_report(cfg)["predictions"])
    women = set(pl.read_csv(root / "users.csv").filter(pl.col("gender") == "female")["user_id"].to_list())
    assert set(predictions["user_id"].to_list()) == women


def test_the_report_path_never_imports_torch(report_inputs, tmp_path):
    # A fresh interpreter: this test process has torch loaded already (the tiny bundle is trained with it).
    root, bundles = report_inputs
    code = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path

        from training.reports.behaviour import ReportConfig, build_report

        assert "torch" not in sys.modules, "importing the report imported torch"
        root = Path({str(root)!r})
        cfg = ReportConfig(
            bundles=Path({str(bundles)!r}),
            events=root / "events",
            out=Path({str(tmp_path / "out")!r}),
            users=root / "users.csv",
            nightly_dir=root / "nightly",
            period_days=30,
        )
        build_report(cfg)
        assert "torch" not in sys.modules, "building the report imported torch"
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "out" / "report.html").exists() and (tmp_path / "out" / "predictions.parquet").exists()


def test_predictions_from_index_candidates_match_the_exact_ones_and_the_backtest_can_sample(
    report_inputs, tiny_prepared, tiny_lm, tmp_path, monkeypatch
):
    """A bundle behind an approximate index gets its predictions from the index's candidates plus a sampled
    estimate of the rest of the softmax: exact when the sample covers the catalogue, close when it does not."""
    from recsys.index import IndexParams
    from training import pipeline
    from training.export import export_bundle
    from training.reports import predictions as predictions_module

    root, flat_bundles = report_inputs
    prepared, _ = tiny_prepared
    sequences = pipeline.build_sequences(prepared.events, prepared.vocab)
    exhaustive = IndexParams(kind="hnsw", hnsw_ef_construction=200, hnsw_ef_search=512)  # 512 > the items
    hnsw_bundle = export_bundle(
        tiny_lm, sequences, tmp_path / "bundles", prepared.catalogue, {"metrics": {}}, index=exhaustive
    )

    def report(bundles, name: str) -> tuple[pl.DataFrame, dict]:
        cfg = ReportConfig(
            bundles=bundles, events=root / "events", out=tmp_path / name, baselines=["popularity"], backtest_users=40
        )
        result = build_report(cfg)
        return pl.read_parquet(result["predictions"]).sort("user_id"), result["document"]

    exact, exact_doc = report(flat_bundles, "exact")
    from_index, index_doc = report(hnsw_bundle, "candidates")
    assert (exact_doc["predictions_method"], index_doc["predictions_method"]) == ("exact", "candidates")
    assert exact.height == from_index.height == prepared.events["user_id"].n_unique()  # every user, both ways
    assert exact["items"].to_list() == from_index["items"].to_list()
    for column in ("probabilities", "category_probabilities"):
        np.testing.assert_allclose(
            np.array(from_index[column].to_list()), np.array(exact[column].to_list()), rtol=1e-4, atol=1e-6
        )
    # the back-test ran on a fixed sample of 40 of the users, the same one for both bundles
    assert index_doc["users_in_backtest"] == exact_doc["users_in_backtest"] == 40 < index_doc["holdout_users"]
    page = (tmp_path / "candidates" / "report.html").read_text()
    assert "fixed random sample of 40 of the" in page and "estimated from a uniform sample" in page

    # a sample of a fifth of the catalogue: an estimate, unbiased but not exact
    monkeypatch.setattr(predictions_module, "TAIL_SAMPLE", prepared.vocab.__len__() // 5)
    sampled, _ = report(hnsw_bundle, "sampled")
    assert sampled["items"].to_list() == exact["items"].to_list()  # the top-k never depends on the sample
    got, want = np.array(sampled["probabilities"].to_list()), np.array(exact["probabilities"].to_list())
    assert not np.allclose(got, want, rtol=1e-4)
    assert np.median(np.abs(got / want - 1)) < 0.25
