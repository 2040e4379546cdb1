"""Data-parallel training: the nightly train step under torchrun with 2 processes (DDP, gloo on CPU) matches
the same training in one process."""

from __future__ import annotations

import json

from training.bench.ddp import train_both
from training.nightly.drills import TINY_PRESET


def test_two_processes_under_torchrun_match_one_process(tiny_prepared, tmp_path):
    _, dataset_dir = tiny_prepared
    preset = json.loads(json.dumps(TINY_PRESET))
    # dropout off: then 2 processes compute exactly the 1-process gradients, up to the order of float sums
    preset["lm"].update(attention_dropout=0.0, embedding_dropout=0.0)
    (tmp_path / "preset.json").write_text(json.dumps(preset))
    fixed = {"epochs": 3, "patience": 10, "eval_every": 1}
    result = train_both(dataset_dir, str(tmp_path / "preset.json"), fixed, 2, tmp_path / "runs", threads=1)

    one, two = result["runs"]["1 process"], result["runs"]["2 processes"]
    assert (one["processes"], two["processes"]) == (1, 2)
    assert one["epochs"] == two["epochs"] == 3
    assert result["max_abs_weight_diff"] < 1e-4 * result["max_abs_weight"], result
    assert result["valid_NDCG@10_max_diff"] < 1e-3, result
    assert abs(result["test_NDCG@10_diff"]) < 1e-3, result
    assert one["test"]["NDCG@10"] > 0.1  # it learned something, so the agreement is not two untrained models


def test_the_nightly_train_step_runs_under_torchrun(tmp_path):
    from training.nightly import drills
    from training.nightly.job import NightlyConfig, read_json, run_nightly

    sc = drills.tiny_scenario(tmp_path / "data")
    cfg = NightlyConfig(
        work_dir=tmp_path / "nightly",
        bundles_root=tmp_path / "bundles",
        inbox=sc.inbox,
        catalogue=sc.catalogue_night1,
        preset=str(sc.preset),
        nproc=2,
        text_init=False,
        run_id="ddp-night",
    )
    summary = run_nightly(cfg, lambda _line: None)
    assert summary["status"] == "promoted"
    train = read_json(tmp_path / "nightly" / "runs" / "ddp-night" / "steps" / "train.json")
    assert train["processes"] == 2
