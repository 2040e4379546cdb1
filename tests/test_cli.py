"""The README's paths through the real `recsys` command line, in subprocesses."""

import json
import subprocess
import sys

import polars as pl
import pytest

from recsys import bundle


def recsys(*args, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "recsys.cli", *map(str, args)], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["data"],
        ["data", "validate"],
        ["data", "import"],
        ["data", "synthetic"],
        ["train"],
        ["evaluate"],
        ["export"],
        ["recommend"],
        ["bundle", "verify"],
        ["bundle", "promote"],
        ["demo"],
        ["benchmark", "quality"],
    ],
)
def test_every_command_has_help(command):
    out = recsys(*command, "--help")
    assert out.returncode == 0, out.stderr
    assert "Usage" in out.stdout


def test_demo_end_to_end_promotes_a_bundle_and_recommends(tmp_path):
    out = recsys("demo", "--preset", "tiny", "--work-dir", tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    version = bundle.current_version(tmp_path / "bundles")
    assert version is not None
    bundle.verify(tmp_path / "bundles" / version)
    assert f"from bundle {version}" in out.stdout
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())["models"]
    assert set(metrics) == {"popularity", "als", "lm"}
    assert metrics["lm"]["test"]["NDCG@10"] > metrics["popularity"]["test"]["NDCG@10"]


def test_step_by_step_commands(tmp_path):
    from recsys.data.synthetic import write_synthetic

    events, catalogue = write_synthetic(tmp_path / "raw", "tiny", 1)
    dataset, model_dir, bundles = tmp_path / "dataset", tmp_path / "lm", tmp_path / "bundles"
    out = recsys("data", "import", events, "--catalogue", catalogue, "--out", dataset)
    assert out.returncode == 0, out.stderr
    out = recsys("train", "--dataset", dataset, "--out", model_dir, "--model", "lm", "--epochs", "2")
    assert out.returncode == 0, out.stderr
    out = recsys("evaluate", "--dataset", dataset, "--model-dir", model_dir, "--out", tmp_path / "m.json")
    assert out.returncode == 0, out.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert {"test", "test_unmasked", "valid"} <= set(metrics) and 0 <= metrics["test"]["HR@10"] <= 1
    popularity = tmp_path / "popularity"
    assert recsys("train", "--dataset", dataset, "--out", popularity, "--model", "popularity").returncode == 0
    out = recsys("evaluate", "--dataset", dataset, "--model-dir", popularity)  # no window of its own, none guessed
    assert out.returncode == 1 and "--max-len" in out.stderr and "Traceback" not in out.stderr, out.stderr
    out = recsys("evaluate", "--dataset", dataset, "--model-dir", popularity, "--max-len", "50")
    assert out.returncode == 0, out.stderr
    out = recsys("export", "--dataset", dataset, "--model-dir", model_dir, "--bundles", bundles)
    assert out.returncode == 0, out.stderr
    out = recsys("bundle", "verify", bundles)
    assert out.returncode == 0 and "verified" in out.stdout
    out = recsys("evaluate", "--dataset", dataset, "--bundle", bundles, "--out", tmp_path / "b.json")
    assert out.returncode == 0, out.stderr
    onnx_metrics = json.loads((tmp_path / "b.json").read_text())
    assert onnx_metrics["test"]["NDCG@10"] == pytest.approx(metrics["test"]["NDCG@10"], abs=1e-3)
    user = pl.read_parquet(dataset / "events.parquet")["user_id"][0]
    out = recsys("recommend", "--bundle", bundles, "--user", user, "-k", "3", "--json")
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)["item_ids"]) == 3


def test_validate_command_keeps_rejects_and_fails_above_the_threshold(tmp_path):
    source = tmp_path / "events.csv"
    source.write_text(
        "user_id,item_id,timestamp\nu1,i1,1000\nu1,i2,1001\n,i3,1002\nu2,,1003\nu2,i1,yesterday\nu1,i1,1000\n"
    )
    rejects = tmp_path / "rejects.parquet"
    out = recsys("data", "validate", source, "--rejects", rejects, "--max-reject-rate", "0.2")
    assert out.returncode == 1
    assert "reject rate" in out.stderr and "above the threshold" in out.stderr
    reasons = pl.read_parquet(rejects)["reason"].to_list()
    assert sorted(reasons) == ["bad_timestamp", "duplicate", "missing_item_id", "missing_user_id"]
    out = recsys("data", "import", source, "--out", tmp_path / "prepared")
    assert out.returncode == 1 and "rejects.parquet" in out.stderr and "Traceback" not in out.stderr
    assert len(pl.read_parquet(tmp_path / "prepared" / "rejects.parquet")) == 4


def test_missing_inputs_give_clear_errors(tmp_path):
    out = recsys("train", "--dataset", tmp_path / "nope", "--out", tmp_path / "m")
    assert out.returncode == 1 and "not found" in out.stderr and "Traceback" not in out.stderr
    out = recsys("data", "import", tmp_path / "nope.csv", "--out", tmp_path / "p")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    out = recsys("data", "import", tmp_path / "nope.csv", "--format", "xml", "--out", tmp_path / "p")
    assert out.returncode == 1 and "valid formats" in out.stderr


def test_a_bad_preset_is_a_one_line_error_naming_the_file(tmp_path):
    preset = tmp_path / "bad.json"
    cases = [
        ({"max_len": 20, "lm": {"hiden_size": 32}}, "unexpected keyword argument 'hiden_size'"),
        ({"max_len": 20, "train": {"precision": "fp16"}}, "precision must be one of fp32, bf16"),
        ({"max_len": 20, "members": [{"lm": {"hidden_size": 16}}]}, "at least 2 members"),
        ({"max_len": 20, "nightly": {"warm_shrink": 1.5}}, "warm_shrink must be in (0, 1]"),
        ({"max_len": 20, "nightly": {"warm_epoch": 3}}, "unexpected keyword argument 'warm_epoch'"),
        ({"lm": {"hidden_size": 32}}, "no max_len"),
    ]
    for content, message in cases:
        preset.write_text(json.dumps(content))
        out = recsys("train", "--dataset", tmp_path / "nope", "--out", tmp_path / "m", "--preset", preset)
        assert out.returncode == 1 and message in out.stderr and "Traceback" not in out.stderr, out.stderr
