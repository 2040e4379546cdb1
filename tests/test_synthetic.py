"""The synthetic generator: deterministic, well-formed, and with real sequential structure."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recsys.data.importers import read_csv_events
from recsys.data.synthetic import PRESET_DIR, SyntheticPreset, build_world, generate, load_preset, write_synthetic
from recsys.data.validate import validate


@pytest.fixture(scope="module")
def tiny() -> SyntheticPreset:
    return load_preset("tiny")


@pytest.fixture(scope="module")
def tiny_data(tiny: SyntheticPreset) -> tuple[pl.DataFrame, pl.DataFrame]:
    return generate(tiny, seed=3)


def test_same_seed_same_data_other_seed_other_data(tiny: SyntheticPreset, tiny_data) -> None:
    events, catalogue = tiny_data
    again_events, again_catalogue = generate(tiny, seed=3)
    assert_frame_equal(events, again_events)
    assert_frame_equal(catalogue, again_catalogue)
    other_events, other_catalogue = generate(tiny, seed=4)
    assert not events.equals(other_events)
    assert not catalogue.equals(other_catalogue)


def test_shapes_and_catalogue_records(tiny: SyntheticPreset, tiny_data) -> None:
    events, catalogue = tiny_data
    assert events["user_id"].n_unique() == tiny.n_users
    assert catalogue.height == tiny.n_items and catalogue["item_id"].is_unique().all()
    assert catalogue["item_id"].str.contains(r"^SKU-\d{5}$").all()
    assert catalogue["title"].is_unique().all()
    assert set(events["item_id"].unique()) <= set(catalogue["item_id"])
    for row in catalogue.head(20).to_dicts():
        assert row["title"].startswith(row["brand"] + " ")
        assert row["category"].startswith("Beauty > ")
        # the description states only facts of the record
        assert row["brand"] in row["description"] and row["category"] in row["description"]
        assert f"{row['price']:.2f}" in row["description"]
    lengths = events.group_by("user_id").len()["len"]
    assert lengths.min() >= tiny.min_length and lengths.max() <= tiny.max_length
    assert 0.6 * tiny.mean_length < lengths.mean() < 1.4 * tiny.mean_length
    increasing = events.group_by("user_id").agg((pl.col("timestamp").diff().drop_nulls() > 0).all())
    assert increasing["timestamp"].all()
    assert events["timestamp"].is_sorted()  # written as a log, in time order


def test_sequences_follow_the_planted_follow_ups(tiny: SyntheticPreset, tiny_data) -> None:
    events, catalogue = tiny_data
    world = build_world(tiny, seed=3)
    assert world.catalogue.equals(catalogue)
    index = {item_id: i for i, item_id in enumerate(world.item_ids)}
    pairs = (
        events.sort("user_id", "timestamp")
        .with_columns(pl.col("item_id").shift(-1).over("user_id").alias("next"))
        .drop_nulls("next")
    )
    prev = np.array([index[i] for i in pairs["item_id"]])
    nxt = np.array([index[i] for i in pairs["next"]])
    hit = (world.follow_ups[prev] == nxt[:, None]).any(axis=1).mean()
    chance = world.n_follow_ups.mean() / tiny.n_items
    assert hit > 0.45  # follow_up_prob = 0.5, plus the odd follow-up drawn by taste
    assert chance < 0.03

    # a model-free check of the same thing: "most frequent successor" beats "most popular" by far
    train, test = pairs.filter(pl.col("user_id") < "U-00200"), pairs.filter(pl.col("user_id") >= "U-00200")
    top = train.group_by("item_id", "next").len().sort("len", "next", descending=True)
    successors = top.group_by("item_id", maintain_order=True).agg(pl.col("next").head(10))
    popular = train["next"].value_counts(sort=True)["next"].head(10)
    scored = test.join(successors.rename({"next": "top"}), on="item_id", how="left")
    bigram_hr = scored.select(pl.col("top").list.contains(pl.col("next")).fill_null(False)).to_series().mean()
    popular_hr = test["next"].is_in(popular.implode()).mean()
    assert bigram_hr > 2 * popular_hr


def test_write_synthetic_csvs_pass_validation(tmp_path: Path) -> None:
    events_path, catalogue_path = write_synthetic(tmp_path, "tiny", seed=1, n_users=40)
    validated = validate(read_csv_events(events_path, catalogue_path), max_reject_rate=0.0)
    assert validated.summary["rejected"] == 0 and validated.summary["users"] == 40
    assert validated.catalogue is not None and validated.catalogue.height == load_preset("tiny").n_items
    assert validated.catalogue["price"].null_count() == 0


def test_committed_sample_is_what_the_generator_writes(tmp_path: Path) -> None:
    """data/sample is generated (tiny preset, seed 0, 200 users); it must not drift from the generator."""
    sample = PRESET_DIR.parent / "sample"
    events_path, catalogue_path = write_synthetic(tmp_path, "tiny", seed=0, n_users=200)
    assert events_path.read_bytes() == (sample / "events.csv").read_bytes()
    assert catalogue_path.read_bytes() == (sample / "catalogue.csv").read_bytes()
    assert (sample / "events.csv").stat().st_size + (sample / "catalogue.csv").stat().st_size < 300_000


def test_presets_load_and_bad_presets_are_explained(tmp_path: Path) -> None:
    default = load_preset("default")
    assert (default.n_users, default.n_items) == (3000, 600)
    assert load_preset(PRESET_DIR / "tiny.json") == load_preset("tiny")
    with pytest.raises(ValueError, match=r"available: .*'default'.*'tiny'"):
        load_preset("huge")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"n_users": 10, "n_itmes": 5}))
    with pytest.raises(ValueError, match="n_itmes"):
        load_preset(bad)
    with pytest.raises(ValueError, match="n_categories"):
        replace(default, n_categories=99)
