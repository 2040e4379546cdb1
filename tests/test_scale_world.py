"""The scale generator: exact sizes, bounded chunks, a power law, sequential structure, importable as is."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from recsys.data.importers import read_dataset
from recsys.data.scale import CATALOGUE_FILE, EVENTS_DIR, SUMMARY_FILE, ScaleWorld, write_scale_world
from recsys.data.validate import validate


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale")
    world = ScaleWorld(items=3000, users=4000, events=60_000, categories=50, chunk_users=1500, seed=3)
    write_scale_world(world, out, log=lambda _: None)
    return out


def test_sizes_are_exact_and_every_user_can_be_evaluated(world_dir):
    events = pl.scan_parquet(world_dir / EVENTS_DIR / "*.parquet").collect()
    per_user = events.group_by("user_id").len()["len"]
    assert len(events) == 60_000 and len(per_user) == 4000 and per_user.min() >= 3 and per_user.max() <= 500
    assert len(list((world_dir / EVENTS_DIR).glob("part-*.parquet"))) == 3  # one file per chunk of 1,500 users
    summary = json.loads((world_dir / SUMMARY_FILE).read_text())
    assert summary["files"] == 3 and summary["peak_rss_mb"] > 0 and summary["world"]["events"] == 60_000


def test_popularity_is_heavy_tailed_and_behaviour_sequential(world_dir):
    events = pl.scan_parquet(world_dir / EVENTS_DIR / "*.parquet").collect().sort("user_id", "timestamp")
    counts = np.sort(events.group_by("item_id").len()["len"].to_numpy())[::-1]
    assert counts[: len(counts) // 100].sum() > 0.1 * counts.sum()  # the top 1% of items take over 10%
    item = events["item_id"].str.slice(1).cast(pl.Int64).to_numpy()
    same_user = events["user_id"].to_numpy()[1:] == events["user_id"].to_numpy()[:-1]
    successor = (item[1:] == item[:-1] + 1) & same_user
    assert successor.sum() / same_user.sum() > 0.3  # p_next = 0.5 minus chain wraps; chance is ~0.001


def test_the_same_seed_writes_the_same_world(world_dir, tmp_path):
    write_scale_world(
        ScaleWorld(items=3000, users=4000, events=60_000, categories=50, chunk_users=1500, seed=3), tmp_path
    )
    for name in (CATALOGUE_FILE, f"{EVENTS_DIR}/part-00001.parquet"):
        assert pl.read_parquet(tmp_path / name).equals(pl.read_parquet(world_dir / name))


def test_the_world_imports_and_validates_without_rejects(world_dir):
    raw = read_dataset(world_dir / EVENTS_DIR, "parquet", catalogue_path=world_dir / CATALOGUE_FILE)
    assert validate(raw).summary["rejected"] == 0


def test_impossible_sizes_are_refused_with_the_range():
    with pytest.raises(ValueError, match="between 3 per user"):
        ScaleWorld(items=10, users=100, events=200)
