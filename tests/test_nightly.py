"""The nightly job: exactly-once ingest, SIGKILL at several steps then rerun, the gate, the lock, failures,
rollback and retention. Tiny synthetic data (training/nightly/drills.py builds the two-night scenario)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import polars as pl
import pytest

from recsys import bundle
from recsys.bundle import releases
from recsys.bundle.layout import REQUIRED
from recsys.data import lake
from recsys.settings import REPO_ROOT
from training.nightly import drills
from training.nightly.job import NightlyConfig, NightlyLocked, StepFailed, run_nightly

# a chain of kills through the whole run: after ingest committed, mid-training, with a bundle half written
# (staging), sealed but not promoted, and promoted but not recorded as done
CHAIN = ("ingest:committed", "train:running", "export:staged", "export:sealed", "promote:done")


def quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def drill(tmp_path_factory):
    root = tmp_path_factory.mktemp("drill")
    result = drills.kill_drill(root, points=CHAIN, chain=True, log=quiet)
    return result, root


def night_config(sc: drills.Scenario, work: Path, run_id: str, **changes) -> NightlyConfig:
    fields = dict(
        work_dir=work / "nightly",
        bundles_root=work / "bundles",
        inbox=sc.inbox,
        journal=sc.journal,
        catalogue=sc.catalogue_night2,
        preset=str(sc.preset),
        run_id=run_id,
    )
    return NightlyConfig(**{**fields, **changes})


def scenario(root: Path) -> drills.Scenario:
    return drills.load_scenario(root / "data")


def test_sigkill_at_several_steps_then_rerun_gives_the_same_bundle_and_every_event_once(drill):
    result, root = drill
    assert result["runs"] == len(CHAIN)
    assert all(p["killed"] for p in result["points"]), result["points"]
    assert result["failures"] == 0, result["problems"]

    # the reference itself: every delivered row is in the lake or the rejects, none twice
    reference = root / "reference"
    parts = lake.partitions(reference / "nightly" / "lake")
    assert [p["run_id"] for p in parts] == ["night-1", "night-2"]
    night2 = parts[1]
    assert night2["journal"]["upto"] > night2["journal"]["after"] == 0
    assert night2["input_rows"] == night2["events"] + night2["rejected"]
    # the bundle records what it ingested, so the service keeps later events live on top of it
    manifest = json.loads((bundle.resolve(reference / "bundles") / bundle.MANIFEST).read_text())
    taken = night2["journal"]
    assert taken["store_id"] and taken["location"] == "sqlite"
    assert manifest["events_watermark"] == {"location": "sqlite", "store_id": taken["store_id"], "seq": taken["upto"]}
    assert night2["reasons"]["duplicate"] == 1 and night2["reasons"]["missing_user_id"] == 1
    events = lake.lake_events(reference / "nightly" / "lake")
    assert events.select("user_id", "item_id", "timestamp").is_duplicated().sum() == 0


def test_new_items_start_from_text_and_retired_items_are_not_served(drill):
    _, root = drill
    reference = root / "reference"
    sc = scenario(root)
    train = json.loads((reference / "nightly" / "runs" / "night-2" / "steps" / "train.json").read_text())
    assert train["mode"] == "warm" and train["new_item_rows_from_text"] == len(sc.new_items)
    served = json.loads((bundle.resolve(reference / "bundles") / "item_ids.json").read_text())
    assert sc.retired_item not in served
    assert set(sc.new_items) <= set(served)
    checkpoint = json.loads((reference / "nightly" / "runs" / "night-2" / "candidate" / "item_vocab.json").read_text())
    assert sc.retired_item in checkpoint["item_ids"]  # kept for the next warm start, just not served


def test_gate_refuses_a_worse_candidate_and_the_service_stays_on_the_old_bundle(drill, tmp_path):
    from recsys.harness import ServerProcess

    _, root = drill
    sc = scenario(root)
    work = tmp_path / "work"
    shutil.copytree(root / "reference", work)
    before = bundle.current_version(work / "bundles")
    env = {"RECSYS_RELOAD_POLL_S": "0.2", "RECSYS_ACCESS_LOG": "false"}
    with ServerProcess(work / "bundles", tmp_path / "server", env=env) as server:

        def serving() -> str:
            with urllib.request.urlopen(server.url + "/readyz", timeout=5) as response:
                return json.loads(response.read())["bundle_version"]

        assert serving() == before
        refused = run_nightly(night_config(sc, work, "night-3", force=True, drill_shuffle=True), quiet)
        assert refused["status"] == "refused" and not refused["promoted"]
        gate = refused["gate"]
        assert gate["candidate"] < gate["production"] * (1 - gate["tolerance"])
        assert bundle.current_version(work / "bundles") == before
        assert (work / "nightly" / "runs" / "night-3" / "candidate" / "model.json").exists()  # kept to inspect
        time.sleep(0.6)
        assert serving() == before

        # on a fixed sample of users (what keeps evaluate and verify affordable at scale): the gate and verify
        # compare the same users, so the bundle still reproduces the model's figure exactly
        promoted = run_nightly(night_config(sc, work, "night-4", force=True, tolerance=0.5, eval_users=60), quiet)
        assert promoted["status"] == "promoted"
        evaluated = json.loads((work / "nightly" / "runs" / "night-4" / "steps" / "evaluate.json").read_text())
        assert evaluated["users"] == 60 and " of " in evaluated["line"]
        deadline = time.monotonic() + 20
        while serving() != promoted["version"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert serving() == promoted["version"]


def test_nothing_new_is_skipped_and_a_failed_step_leaves_production_and_says_why(drill, tmp_path):
    _, root = drill
    sc = scenario(root)
    work = tmp_path / "work"
    shutil.copytree(root / "reference", work)
    before = bundle.current_version(work / "bundles")
    assert run_nightly(night_config(sc, work, "night-3"), quiet)["status"] == "skipped"

    inbox = tmp_path / "inbox"
    shutil.copytree(sc.inbox, inbox)
    pl.DataFrame(
        {"user_id": ["u1", "", ""], "item_id": [sc.new_items[0], "x", "y"], "timestamp": ["1", "2", "z"]}
    ).write_csv(inbox / "night-4.csv")
    args = drills.nightly_args(sc, work, 2, "night-4")
    args[args.index("--inbox") + 1] = str(inbox)
    out = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "nightly", *args], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "failed at step 'ingest'" in out.stderr and "rejected" in out.stderr
    assert bundle.current_version(work / "bundles") == before
    summary = json.loads((work / "nightly" / "runs" / "night-4" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["failed_step"] == "ingest"
    assert pl.read_parquet(work / "nightly" / "runs" / "night-4" / "ingest_rejects.parquet").height == 2
    assert len(lake.partitions(work / "nightly" / "lake")) == 2  # nothing of the bad delivery committed

    with pytest.raises(StepFailed, match="step 'ingest'"):  # rerun resumes the failed run, fails the same way
        run_nightly(night_config(sc, work, "night-4", inbox=inbox), quiet)


def test_the_lock_refuses_a_second_run_and_dies_with_its_holder(tmp_path):
    work = tmp_path / "nightly"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from training.nightly.job import exclusive_lock\n"
            f"with exclusive_lock(Path({str(work / 'nightly.lock')!r})):\n"
            "    print('held', flush=True); time.sleep(600)",
        ],
        stdout=subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    try:
        assert holder.stdout.readline().strip() == b"held"
        cfg = NightlyConfig(work_dir=work, bundles_root=tmp_path / "bundles")
        with pytest.raises(NightlyLocked, match=f"pid {holder.pid}"):
            run_nightly(cfg, quiet)
        out = subprocess.run(
            [sys.executable, "-m", "recsys.cli", "nightly", "--work-dir", str(work), "--bundles", str(tmp_path / "b")],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
        )
        assert out.returncode == 75 and "holds" in out.stderr
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the holder is dead: the lock is free (the run then fails for want of data, which is a different error)
    with pytest.raises(StepFailed, match="lake .* is empty"):
        run_nightly(NightlyConfig(work_dir=work, bundles_root=tmp_path / "bundles", inbox=tmp_path / "none"), quiet)


def test_the_nightly_trains_with_the_presets_recipe_and_options_override_it(tmp_path):
    from training.nightly.job import nightly_recipe
    from training.presets import NightlyRecipe, load_preset

    # the published replay's recipe (movielens: 12 epochs, shrink 0.5) is the default of every preset
    assert (load_preset("movielens").nightly.warm_epochs, load_preset("movielens").nightly.warm_shrink) == (12, 0.5)
    sc = drills.tiny_scenario(tmp_path / "data")
    assert load_preset(str(sc.preset)).nightly == NightlyRecipe(warm_epochs=3)  # the drills' own recipe
    cfg = NightlyConfig(work_dir=tmp_path / "n", bundles_root=tmp_path / "b", preset=str(sc.preset))
    assert nightly_recipe(cfg).warm_epochs == 3
    cfg.recipe = {"warm_epochs": None, "warm_shrink": 0.8, "warm_max_minutes": 2.0}  # None: the preset's
    recipe = nightly_recipe(cfg)
    assert (recipe.warm_epochs, recipe.warm_shrink, recipe.warm_max_minutes) == (3, 0.8, 2.0)
    cfg.recipe = {"warm_epoch": 5}
    with pytest.raises(ValueError, match="no nightly recipe field"):
        nightly_recipe(cfg)
    with pytest.raises(ValueError, match="warm_shrink"):
        NightlyRecipe(warm_shrink=0.0)


def test_exactly_once_ingest_from_files_and_the_journal(tmp_path):
    inbox, journal, root = tmp_path / "inbox", tmp_path / "journal.sqlite3", tmp_path / "lake"
    inbox.mkdir()
    first = pl.DataFrame({"user_id": ["a", "a", "b"], "item_id": ["1", "2", "1"], "timestamp": ["10", "11", "12"]})
    first.write_csv(inbox / "day-1.csv")
    (inbox / "day-2.csv.tmp").write_text("user_id,item_id,timestamp\nc,1,13\n")  # still being written: ignored
    journal_rows = pl.DataFrame(
        {"user_id": ["b", "c"], "item_id": ["3", "3"], "timestamp": ["14", "15"], "event_type": ["view", "view"]}
    )
    drills.write_journal(journal, journal_rows)

    one = lake.ingest(root, "r1", inbox, journal)
    assert (one["events"], list(one["files"])) == (5, ["day-1.csv"])
    assert (one["journal"]["location"], one["journal"]["after"], one["journal"]["upto"]) == ("sqlite", 0, 2)
    assert lake.ingest(root, "r1", inbox, journal)["reused"]  # the same run again: the committed partition
    assert lake.ingest(root, "r2", inbox, journal)["partition"] is None  # nothing new

    os.rename(inbox / "day-2.csv.tmp", inbox / "day-2.csv")
    drills.write_journal(journal, journal_rows.with_columns(pl.lit("16").alias("timestamp")), first_seq_key="k")
    three = lake.ingest(root, "r3", inbox, journal)
    assert (three["events"], three["journal"]["after"], three["journal"]["upto"]) == (3, 2, 4)
    assert lake.lake_events(root).height == 8

    # a partitioned-parquet delivery (hive folders, as Spark writes them) counts once its _SUCCESS appears
    spark = inbox / "export-day-3"
    for day, users in (("2026-01-03", ["d", "e"]), ("2026-01-04", ["f"])):
        (spark / f"day={day}").mkdir(parents=True)
        pl.DataFrame({"user_id": users, "item_id": ["1"] * len(users), "timestamp": [20] * len(users)}).write_parquet(
            spark / f"day={day}" / "part-0.parquet"
        )
    assert lake.ingest(root, "r4", inbox, journal)["partition"] is None  # not complete yet
    (spark / "_SUCCESS").touch()
    assert lake.ingest(root, "r5", inbox, journal)["events"] == 3
    assert lake.lake_events(root).height == 11

    first.head(1).write_csv(inbox / "day-1.csv")  # an ingested file rewritten: refused, not re-read
    with pytest.raises(ValueError, match="immutable"):
        lake.ingest(root, "r6", inbox, journal)


def _fake_bundle(root: Path, version: str) -> None:
    staging = bundle.staging_dir(root, version)
    for name in REQUIRED:
        (staging / name).write_text(version)
    bundle.seal(staging, version, {"model": {}})


def test_rollback_goes_back_release_by_release_and_retention_keeps_current_and_previous(tmp_path):
    root = tmp_path / "bundles"
    versions = [f"2026010{n}T000000000000Z" for n in range(1, 6)]
    for version in versions:
        _fake_bundle(root, version)
        bundle.promote(root, version)
    assert releases.previous_version(root) == versions[3]
    out = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "rollback", "--bundles", str(root)], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert bundle.current_version(root) == versions[3]
    assert releases.rollback(root) == (versions[3], versions[2])  # twice: two releases back, not forward
    assert releases.previous_version(root) == versions[1]

    removed = releases.prune(root, keep=1)
    assert set(releases.sealed_versions(root)) == {versions[2], versions[1], versions[4]}  # current, previous, newest
    assert set(removed) == {versions[0], versions[3]}
    assert releases.rollback(root) == (versions[2], versions[1])
    with pytest.raises(bundle.BundleError, match="no previous bundle"):
        releases.rollback(tmp_path / "empty")


@pytest.mark.parametrize(
    "command",
    [
        ["nightly"],
        ["rollback"],
        ["bundle", "list"],
        ["report", "behaviour"],
        ["benchmark", "nightly-replay"],
        ["benchmark", "ddp"],
    ],
)
def test_new_commands_have_help(command):
    out = subprocess.run([sys.executable, "-m", "recsys.cli", *command, "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "Usage" in out.stdout, out.stderr


def test_replay_reuses_a_from_scratch_model_only_for_the_same_data_and_settings(tiny_prepared, tmp_path):
    from training.bench.replay import _scratch_key

    _, dataset = tiny_prepared
    spec = {
        "prepared": str(dataset),
        "preset": "synthetic",
        "overrides": {"seed": 0, "max_minutes": 5.0},
        "text": None,
        "catalogue_items": True,
    }
    key = _scratch_key(spec)
    assert _scratch_key(dict(spec)) == key  # deterministic: same data, same settings
    assert _scratch_key(spec | {"overrides": {"seed": 1, "max_minutes": 5.0}}) != key
    assert _scratch_key(spec | {"preset": "movielens"}) != key  # the preset's content is part of the key
    changed = tmp_path / "changed"
    shutil.copytree(dataset, changed)
    events = pl.read_parquet(changed / "events.parquet")
    events.slice(1).write_parquet(changed / "events.parquet")  # one event fewer
    assert _scratch_key(spec | {"prepared": str(changed)}) != key


def test_an_approximate_index_is_verified_by_its_recall_and_a_poor_one_never_reaches_production(drill, tmp_path):
    from recsys.bundle.reader import BundleRecommender
    from recsys.index import IndexParams

    _, root = drill
    sc = scenario(root)
    work = tmp_path / "work"
    shutil.copytree(root / "reference", work)
    exhaustive = IndexParams(kind="ivf", ivf_nlist=8, ivf_nprobe=8)  # every cell probed: exact results
    summary = run_nightly(night_config(sc, work, "night-ivf", force=True, index=exhaustive), quiet)
    assert summary["status"] == "promoted", summary
    current = bundle.current_version(work / "bundles")
    engine = BundleRecommender(work / "bundles" / current)
    assert engine.index.params.kind == "ivf" and engine.index.index.nprobe == 8
    verify = next(step for step in summary["steps"] if step["step"] == "verify")
    assert "ivf recall@10 1.000" in verify["line"]

    poor = IndexParams(kind="ivf", ivf_nlist=4, ivf_nprobe=1)  # one cell of 4 searched: much of the top-10 missed
    with pytest.raises(StepFailed, match=r"step 'verify'.*recall|index finds"):
        run_nightly(night_config(sc, work, "night-poor", force=True, index=poor), quiet)
    assert bundle.current_version(work / "bundles") == current  # production untouched
