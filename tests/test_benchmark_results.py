"""What a benchmark result records: baselines tuned and refit like the LM, spreads over seeds, the machine,
and where the JSON goes."""

from dataclasses import replace

import numpy as np
import pytest
from rich.console import Console

from recsys.runinfo import hardware, results_path
from recsys.settings import REPO_ROOT
from training import pipeline
from training.bench.quality import mean_and_spread, run_quality_benchmark
from training.presets import load_preset


def test_results_go_to_the_work_directory_unless_published(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_WORK_DIR", str(tmp_path))
    assert results_path("quality-x", False, None) == tmp_path / "results" / "quality-x.json"
    assert results_path("quality-x", True, None) == REPO_ROOT / "benchmarks" / "results" / "quality-x.json"
    assert results_path("quality-x", True, tmp_path / "mine.json") == tmp_path / "mine.json"  # explicit wins


def test_hardware_is_one_line_and_names_torch_threads_only_when_given():
    line = hardware()
    assert " cores, " in line and "\n" not in line and "torch threads" not in line
    assert hardware(3) == f"{line}, 3 torch threads"


def test_spread_over_seeds_is_the_sample_standard_deviation():
    mean, spread = mean_and_spread([{"NDCG@10": 0.1}, {"NDCG@10": 0.3}])
    assert mean["NDCG@10"] == pytest.approx(0.2)
    assert spread["NDCG@10"] == pytest.approx(np.sqrt(0.02))  # ddof=1 (0.141), not the population 0.1
    assert mean_and_spread([{"NDCG@10": 0.1}])[1]["NDCG@10"] is None  # one seed has no spread


def test_als_is_chosen_on_validation_and_refit_on_train_plus_valid(tiny_prepared, tiny_split):
    prepared, _ = tiny_prepared
    preset = load_preset("synthetic")
    grid = {"factors": [8, 16], "regularization": [0.1]}
    selection = pipeline.select_als(preset, tiny_split, prepared, grid)
    assert selection["grid"] == grid and len(selection["trials"]) == 2
    best = max(selection["trials"], key=lambda trial: trial["valid_NDCG@10"])
    assert selection["chosen"] == {k: v for k, v in best.items() if k != "valid_NDCG@10"}
    assert selection["chosen"]["alpha"] == preset.als["alpha"]  # what the grid leaves out is the preset's

    model = pipeline.new_model("als", replace(preset, als=selection["chosen"]))
    stats = pipeline.fit(model, tiny_split, prepared, refit_with_valid=True)
    assert stats["refit_with_valid"] is True
    assert stats["valid_metrics"]["NDCG@10"] == pytest.approx(best["valid_NDCG@10"])  # the selection fit's
    splits = pipeline.evaluate_splits(model, tiny_split, stats["valid_metrics"], refit=True)
    assert splits["valid"] is stats["valid_metrics"]
    assert set(splits["valid_refit_not_held_out"]) >= {"HR@10", "NDCG@10"}
    train_only = pipeline.new_model("als", replace(preset, als=selection["chosen"]))
    train_only.fit(tiny_split.train, len(prepared.vocab))
    assert not np.allclose(model.score(tiny_split.test.inputs[:5]), train_only.score(tiny_split.test.inputs[:5]))


def test_quality_benchmark_tunes_als_and_writes_under_the_work_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSYS_WORK_DIR", str(tmp_path))
    document = run_quality_benchmark(
        "synthetic",
        path=None,
        fmt=None,
        preset="amazon",  # refit_with_valid: true
        models=["als"],
        seeds=[0],
        data_root=tmp_path,
        out=None,
        epochs=None,
        console=Console(quiet=True),
        command="test",
    )
    als = document["models"]["als"]
    assert als["hyperparameters"] == als["als_selection"]["chosen"]
    assert len(als["als_selection"]["trials"]) <= 12
    assert als["refit_with_valid"] is True and "valid_refit_not_held_out" in als
    assert (tmp_path / "results" / "quality-synthetic.json").exists()
    assert "torch threads" in document["hardware"]
