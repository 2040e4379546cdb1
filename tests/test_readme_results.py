"""The README's result tables agree with benchmarks/results/*.json, and a changed figure is caught."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from training.bench.tables import BLOCKS, README, RESULTS_DIR, seed_count, update_readme, valid_cell


def test_readme_agrees_with_the_results():
    assert update_readme(README, RESULTS_DIR, check=True) == [], "run `recsys benchmark tables`"


def test_every_block_has_both_markers_once():
    text = README.read_text(encoding="utf-8")
    for name in BLOCKS:
        assert text.count(f"<!-- results:{name} -->") == 1, name
        assert text.count(f"<!-- /results:{name} -->") == 1, name


def tamper(path: Path, keys: list[str]) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    node = doc
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = node[keys[-1]] * 1.1 + 0.01
    path.write_text(json.dumps(doc), encoding="utf-8")


@pytest.mark.parametrize(
    ("name", "keys", "blocks"),
    [
        ("serving.json", ["bundles", "beauty", "http_rps"], {"serving"}),
        ("quality-scientific.json", ["models", "lm", "test", "NDCG@10"], {"quality"}),
        ("nightly-replay.json", ["warm_vs_scratch", "ndcg10_ratio"], {"nightly-replay"}),
        ("adcopy.json", ["rougeL", "generated"], {"adcopy", "adcopy-smollm2"}),
        ("adcopy.json", ["systems", "pretrained_finetuned", "rougeL"], {"adcopy-systems"}),
    ],
)
def test_a_changed_figure_is_caught_and_rewritten(tmp_path, name, keys, blocks):
    results = tmp_path / "results"
    shutil.copytree(RESULTS_DIR, results)
    readme = tmp_path / "README.md"
    shutil.copy(README, readme)
    tamper(results / name, keys)

    assert set(update_readme(readme, results, check=True)) == blocks
    assert readme.read_text(encoding="utf-8") == README.read_text(encoding="utf-8")  # check writes nothing
    assert set(update_readme(readme, results)) == blocks
    assert update_readme(readme, results, check=True) == []


def test_every_result_records_date_hardware_and_command():
    files = sorted(RESULTS_DIR.glob("*.json"))
    assert files
    for path in files:
        doc = json.loads(path.read_text(encoding="utf-8"))
        for key in ("date", "hardware", "command"):
            assert isinstance(doc.get(key), str) and doc[key].strip(), f"{path.name}: no {key}"


def test_seed_count_prefers_the_stored_count():
    runs = [{"seed": s} for s in range(3)]
    assert seed_count({"seeds": runs}) == 3
    assert seed_count({"seeds": runs, "n": 5}) == 5
    assert seed_count({"seeds": 4}) == 4
    assert seed_count({"seed": 0}) is None


def test_refit_validation_is_never_shown_as_held_out():
    entry = {"valid": {"NDCG@10": 0.2}, "valid_refit_not_held_out": {"NDCG@10": 0.3}}
    assert valid_cell(entry) == "0.2000; refit, not held out: 0.3000"
    selected = {"valid": {"NDCG@10": 0.3}, "selection_run": {"valid": {"NDCG@10": 0.1}}}
    assert valid_cell(selected) == "0.1000 (selection run)"


def test_tables_run_without_torch():
    code = "import sys, training.bench.tables; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=README.parent)


def test_the_adcopy_systems_table_shows_every_system_the_live_choice_and_the_first_examples(tmp_path):
    from training.bench.tables import adcopy_systems

    scored = {"items": 40, "rougeL": 0.31, "bleu": 12.0, "perplexity": 18.5, "repeat_ngram_rate": 0.0}
    scored |= {"informative_rate": 0.95, "boilerplate_rate": 0.0, "unsupported_after_checks": 0.0}
    doc = {
        "date": "d",
        "hardware": "h",
        "command": "recsys benchmark adcopy",
        "systems": {"template": scored, "pretrained_finetuned_quantised": {**scored, "fallback_rate": 0.05}},
        "pretrained_live": {"model": "tuned int8", "requests": 100, "p99_ms": 1800.0, "in_budget_rate": 0.4},
        "live": {"model": "small model"},
        "precomputed_p99_ms": 3.2,
        "examples_first_three": [
            {"item_id": "B1", "name": "Beaker | 250 ml", "extractive": {"headline": "Beaker", "body": "Glass."}}
        ],
        "repeat_penalty": {
            "chosen": 8.0,
            "items": 96,
            "baselines": {"extractive": 0.039, "small_model": 0.0215},
            "grid": [
                {"repeat_penalty": 8.0, "perplexity": 107.37, "repeat_ngram_rate": 0.0117},
                {"repeat_penalty": None, "perplexity": 108.55, "repeat_ngram_rate": 0.0163},
            ],
        },
    }
    (tmp_path / "adcopy.json").write_text(json.dumps(doc), encoding="utf-8")
    text = adcopy_systems(tmp_path)
    assert "| SmolLM2-135M fine-tuned, int8 | 40 | 0.3100 | 12.0 | 18.5 | 0.0% | 95.0% | 0.0% | 0.0% | 5.0% |" in text
    assert "| template | 40 |" in text and "tuned int8" in text and "1800" in text and "40.0%" in text
    assert "answered by: small model" in text and "p99 3.20 ms" in text
    assert "**Beaker | 250 ml** (`B1`)" in text and "extractive rule: “Beaker” — Glass." in text
    assert "Repeat penalty: 8, chosen on 96 validation items" in text
    assert "(extractive rule 3.9%, small model, span-constrained 2.1%)" in text
    assert "8: 107.4, 1.2%; repeats last: 108.5, 1.6%." in text
