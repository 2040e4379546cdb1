"""Drills for the nightly job on the tiny synthetic data: SIGKILL at every step, then rerun.

Used by tests/test_nightly.py and by `recsys benchmark nightly-replay` (its `kill_tests` figures), so the
test and the published figure are one code path.

The scenario: night 1 loads most of the history from an event file; night 2 brings the rest, partly as a
file and partly through the service's journal, with a re-delivered event, a bad row, three items that are
new that night, and one item dropped from the catalogue. A reference run does both nights without
interruption. The drill then replays night 2 from the state after night 1, killing the `recsys nightly`
process (SIGKILL: no cleanup) at chosen points and rerunning it, and checks that the end state is the
reference's: the same bundle files serving, each event in the lake exactly once, one promotion, no stray
bundle or staging directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from recsys import bundle
from recsys.bundle import releases
from recsys.data import lake
from recsys.data.synthetic import write_synthetic
from recsys.settings import REPO_ROOT

# Points where the process is killed (training.nightly.job.crash_point names), in run order, and "train:running":
# an outside SIGKILL once the train step has started (mid-epoch, or while saving).
KILL_POINTS = (
    "ingest:committed",
    "prepare:done",
    "train:running",
    "train:saved",
    "evaluate:done",
    "gate:done",
    "export:staged",
    "export:sealed",
    "verify:done",
    "promote:done",
)
TINY_PRESET = {
    "description": "drills: a very small model so that a run takes seconds",
    "max_len": 20,
    "lm": {
        "hidden_size": 32,
        "num_layers": 1,
        "num_heads": 2,
        "intermediate_size": 64,
        "attention_dropout": 0.1,
        "embedding_dropout": 0.1,
    },
    # one thread: a model this small gains nothing from two, and a busy machine slows OpenMP barriers badly
    "train": {
        "epochs": 5,
        "batch_size": 64,
        "lr": 0.003,
        "weight_decay": 0.01,
        "patience": 3,
        "log_every": 1000,
        "num_threads": 1,
    },
    "nightly": {"warm_epochs": 3},  # the warm start's fine-tune: a few epochs are enough here
}


@dataclass
class Scenario:
    root: Path
    inbox: Path
    journal: Path
    catalogue_night1: Path
    catalogue_night2: Path
    preset: Path
    new_items: list[str]
    retired_item: str
    events_night1: int
    events_night2: int  # rows delivered on night 2 (file + journal), bad and re-delivered ones included


def write_journal(path: Path, events: pl.DataFrame, first_seq_key: str = "j") -> None:
    """Rows as the service's journal stores them (same schema; serving.journal is not imported here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path)
    conn.executescript(
        "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL UNIQUE, "
        "user_id TEXT NOT NULL, item_id TEXT NOT NULL, timestamp REAL NOT NULL, event_type TEXT, value REAL, "
        "received_at REAL NOT NULL, batch_id TEXT NOT NULL);"
        "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    )
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)", (uuid.uuid4().hex,))
    rows = [
        (
            f"{first_seq_key}-{n}",
            r["user_id"],
            r["item_id"],
            float(r["timestamp"]),
            r["event_type"],
            None,
            time.time(),
            "b",
        )
        for n, r in enumerate(events.iter_rows(named=True))
    ]
    conn.executemany(
        "INSERT INTO events (event_id, user_id, item_id, timestamp, event_type, value, received_at, batch_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.commit()
    conn.close()


def tiny_scenario(root: Path) -> Scenario:
    root = Path(root)
    events_csv, catalogue_csv = write_synthetic(root / "raw", "tiny", 0)
    events = pl.read_csv(events_csv, infer_schema=False).with_columns(pl.col("timestamp").cast(pl.Int64))
    catalogue = pl.read_csv(catalogue_csv, infer_schema=False)
    counts = events.group_by("item_id").len().sort("len", "item_id")
    retired = counts["item_id"][0]  # the rarest item leaves the catalogue on night 2
    new_items = counts["item_id"][len(counts) // 2 : len(counts) // 2 + 3].to_list()  # mid-popular: learnable
    cut = events["timestamp"].quantile(0.8)
    night1 = events.filter((pl.col("timestamp") <= cut) & ~pl.col("item_id").is_in(new_items))
    night2 = events.filter((pl.col("timestamp") > cut) | pl.col("item_id").is_in(new_items))
    night2 = night2.filter(pl.col("item_id") != retired)
    inbox = root / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    night1.write_csv(inbox / "night-1.csv")
    half = night2.height // 2
    as_file = night2.head(half)
    bad = pl.DataFrame({"user_id": [""], "item_id": [new_items[0]], "timestamp": [int(cut) + 1]}).with_columns(
        event_type=pl.lit("purchase"), value=pl.lit(None, dtype=pl.String)
    )
    as_journal = pl.concat([night2.tail(night2.height - half), as_file.head(1)])  # one event delivered twice
    # night 2's file arrives after night 1 ran: the drill writes it in `stage_night2`
    journal = root / "journal" / "events.sqlite3"
    preset = root / "preset.json"
    preset.write_text(json.dumps(TINY_PRESET))
    catalogue_night1 = root / "catalogue-night-1.csv"  # the new items join the catalogue on night 2
    catalogue.filter(~pl.col("item_id").is_in(new_items)).write_csv(catalogue_night1)
    catalogue_night2 = root / "catalogue-night-2.csv"
    catalogue.filter(pl.col("item_id") != retired).write_csv(catalogue_night2)
    (root / "pending").mkdir(exist_ok=True)
    pl.concat([as_file.cast(pl.String), bad.cast(pl.String)], how="diagonal").write_csv(
        root / "pending" / "night-2.csv"
    )
    as_journal.write_parquet(root / "pending" / "journal.parquet")
    scenario = Scenario(
        root=root,
        inbox=inbox,
        journal=journal,
        catalogue_night1=catalogue_night1,
        catalogue_night2=catalogue_night2,
        preset=preset,
        new_items=new_items,
        retired_item=retired,
        events_night1=night1.height,
        events_night2=as_file.height + 1 + as_journal.height,
    )
    (root / "scenario.json").write_text(json.dumps(asdict(scenario), default=str))
    return scenario


def load_scenario(root: Path) -> Scenario:
    """The scenario `tiny_scenario(root)` wrote, without writing anything."""
    raw = json.loads((Path(root) / "scenario.json").read_text())
    paths = ("root", "inbox", "journal", "catalogue_night1", "catalogue_night2", "preset")
    return Scenario(**{k: Path(v) if k in paths else v for k, v in raw.items()})


def stage_night2(sc: Scenario) -> None:
    """Night 2's deliveries arrive: the event file in the inbox, the rest in the journal."""
    shutil.copy(sc.root / "pending" / "night-2.csv", sc.inbox / "night-2.csv")
    if not sc.journal.exists():
        write_journal(sc.journal, pl.read_parquet(sc.root / "pending" / "journal.parquet"))


def nightly_args(sc: Scenario, work: Path, night: int, run_id: str, tolerance: float = 0.5) -> list[str]:
    """`recsys nightly` options for one night of the scenario (tolerance: the drill tests crashes, not the gate)."""
    return [
        "--work-dir",
        str(work / "nightly"),
        "--bundles",
        str(work / "bundles"),
        "--inbox",
        str(sc.inbox),
        "--journal",
        str(sc.journal),
        "--catalogue",
        str(sc.catalogue_night1 if night == 1 else sc.catalogue_night2),
        "--preset",
        str(sc.preset),
        "--tolerance",
        str(tolerance),
        "--run-id",
        run_id,
    ]


def run_cli(args: list[str], env: dict[str, str] | None = None, log: Path | None = None, timeout: float = 300) -> int:
    """`recsys nightly ARGS` in a child process; returns its exit code (-9: killed by SIGKILL)."""
    command = [sys.executable, "-m", "recsys.cli", "nightly", *args]
    with log.open("ab") if log else open(os.devnull, "wb") as out:
        return subprocess.run(
            command,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            timeout=timeout,
        ).returncode


def kill_while_training(args: list[str], run_dir: Path, log: Path | None, timeout: float = 300) -> int:
    """Start the run and SIGKILL it inside its train step; returns the exit code (-9 only if it died there).

    The train step writes its spec first, then loads data and trains (about a second on the tiny data): the
    kill follows the spec's appearance closely. If the step finished anyway (its done-marker exists), the
    kill missed the step and 0 is returned, so the drill counts the point as not killed there.
    """
    command = [sys.executable, "-m", "recsys.cli", "nightly", *args]
    spec, marker = run_dir / "train_spec.json", run_dir / "steps" / "train.json"
    started = time.monotonic()
    with log.open("ab") if log else open(os.devnull, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        while process.poll() is None and not spec.exists() and time.monotonic() - started < timeout:
            time.sleep(0.01)
        time.sleep(0.1)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        code = process.wait()
    return 0 if marker.exists() else code


def end_state(work: Path) -> dict[str, Any]:
    """What must match the reference: serving bundle's files, lake content, promotions, strays."""
    root = work / "bundles"
    current = bundle.current_version(root)
    manifest = bundle.verify(root / current) if current else {}
    events = lake.lake_events(work / "nightly" / "lake")
    sources = lake.scan_events(work / "nightly" / "lake").select("source", "source_row").collect()
    promotions = [e for e in releases.history(root) if e.get("action") == "promote"]
    return {
        "current": current,
        "files": manifest.get("files"),
        "sealed": releases.sealed_versions(root),
        "strays": sorted(p.name for p in root.iterdir() if p.name.startswith((".staging-", ".trash-"))),
        "lake_rows": events.height,
        "lake_keys": sorted(zip(sources["source"].to_list(), sources["source_row"].to_list(), strict=True)),
        "partitions": len(lake.partitions(work / "nightly" / "lake")),
        "promotions": [e["version"] for e in promotions],
    }


def compare(reference: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """Differences that break the promise (empty list: none)."""
    problems = []
    if got["files"] != reference["files"]:
        problems.append("the serving bundle's files differ from the uninterrupted run's")
    if got["lake_keys"] != reference["lake_keys"] or got["lake_rows"] != reference["lake_rows"]:
        problems.append(f"lake holds {got['lake_rows']} events, the reference {reference['lake_rows']}")
    if got["partitions"] != reference["partitions"]:
        problems.append(f"{got['partitions']} lake partitions, the reference {reference['partitions']}")
    if len(got["sealed"]) != len(reference["sealed"]):
        problems.append(f"{len(got['sealed'])} bundles, the reference {len(reference['sealed'])}")
    if got["strays"]:
        problems.append(f"leftover directories: {got['strays']}")
    if len(got["promotions"]) != len(reference["promotions"]) or len(set(got["promotions"])) != len(got["promotions"]):
        problems.append(f"promotions {got['promotions']} vs the reference's {len(reference['promotions'])}")
    return problems


def kill_drill(
    root: Path,
    points: tuple[str, ...] = KILL_POINTS,
    chain: bool = True,
    log: Any = print,
) -> dict[str, Any]:
    """Run the drill under `root`; returns {"runs", "failures", "points": [...], "problems": [...]}.

    chain=True: one replay of night 2 killed at every point in turn (each rerun resumes the last), then
    finished: quick. chain=False: a fresh copy of the night-1 state per point, killed once, then finished:
    each point checked on its own.
    """
    from training.nightly.job import NightlyConfig, run_nightly

    root = Path(root)
    sc = tiny_scenario(root / "data")
    reference, after_night1 = root / "reference", root / "after-night-1"

    def config(work: Path, night: int) -> NightlyConfig:
        return NightlyConfig(
            work_dir=work / "nightly",
            bundles_root=work / "bundles",
            inbox=sc.inbox,
            journal=sc.journal,
            catalogue=sc.catalogue_night1 if night == 1 else sc.catalogue_night2,
            preset=str(sc.preset),
            tolerance=0.5,
            run_id=f"night-{night}",
        )

    quiet = lambda _line: None  # noqa: E731
    run_nightly(config(reference, 1), quiet)
    shutil.copytree(reference, after_night1)
    stage_night2(sc)
    started = time.perf_counter()
    run_nightly(config(reference, 2), quiet)
    reference_s = time.perf_counter() - started
    expected = end_state(reference)
    log(f"kill drill: reference night 2 took {reference_s:.1f} s in process; killing at {len(points)} points")

    results: list[dict[str, Any]] = []
    problems: list[str] = []
    failed_replays = 0
    workdirs = []
    if chain:
        work = root / "killed"
        shutil.copytree(after_night1, work)
        workdirs = [(work, list(points))]
    else:
        for n, point in enumerate(points):
            work = root / f"killed-{n:02d}"
            shutil.copytree(after_night1, work)
            workdirs.append((work, [point]))
    for work, work_points in workdirs:
        args = nightly_args(sc, work, 2, "night-2")
        logfile = work / "drill.log"
        for point in work_points:
            begun = time.perf_counter()
            if point == "train:running":
                code = kill_while_training(args, work / "nightly" / "runs" / "night-2", logfile)
            else:
                code = run_cli(args, {"RECSYS_NIGHTLY_CRASH_AT": point}, logfile)
            killed = code == -signal.SIGKILL
            results.append(
                {"point": point, "killed": killed, "exit_code": code, "wall_s": round(time.perf_counter() - begun, 1)}
            )
            log(f"  SIGKILL at {point:<17} exit {code:>3} ({'killed there' if killed else 'NOT KILLED'})")
            if not killed:
                problems.append(f"{point}: the process was not killed there (exit {code}); see {logfile}")
        code = run_cli(args, log=logfile)
        found = [f"the final rerun exited {code}; see {logfile}"] if code != 0 else compare(expected, end_state(work))
        problems += [f"after {work_points}: {p}" for p in found]
        failed_replays += bool(found)
        log(f"  rerun finished: {found or 'same end state as the uninterrupted run'}")
    # a kill that did not happen where asked, or a replay whose end state differs from the reference
    failures = sum(1 for r in results if not r["killed"]) + failed_replays
    return {
        "dataset": "synthetic tiny (300 users, 120 items), 2 nights",
        "mode": "chain" if chain else "one kill per fresh copy",
        "runs": len(results),
        "replays": len(workdirs),
        "failures": failures,
        "points": results,
        "problems": problems,
        "reference_night2_s": round(reference_s, 1),
    }
