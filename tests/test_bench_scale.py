"""The scale benchmark's machinery: sizes, the measured child process (real children, real rusage), the day of
new events, and an honest partial result when a stage fails. The full run is `recsys benchmark scale`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

from recsys.data.scale import ScaleWorld, write_scale_world
from training.bench.scale import (
    STAGES,
    parse_size,
    parse_sizes,
    run_measured,
    run_scale,
    write_day_of_events,
)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_sizes_scale_users_and_events_with_the_items():
    assert [(s.items, s.users, s.events) for s in parse_sizes("10k, 100k,1m")] == [
        (10_000, 10_000, 200_000),
        (100_000, 100_000, 2_000_000),
        (1_000_000, 1_000_000, 20_000_000),
    ]
    assert parse_size("250000").items == 250_000
    assert parse_size("2.5K").label == "2.5k"
    for bad in ("ten", "10x", "500", ""):
        with pytest.raises(ValueError):
            parse_sizes(bad)


def test_a_child_is_measured_by_the_kernel_its_peak_memory_and_wall_time(tmp_path):
    # 300 MB touched, then freed: the peak stays, the end-of-run size would not show it
    figures = run_measured(
        python("""
            import time
            block = bytearray(300 * 2**20)
            for i in range(0, len(block), 4096):
                block[i] = 1
            del block
            time.sleep(0.5)
            print("done")
        """),
        tmp_path / "child.log",
        timeout_s=60,
    )
    assert "error" not in figures, figures
    assert 300 <= figures["peak_rss_mb"] < 600
    assert figures["wall_s"] >= 0.5 and figures["exit_code"] == 0
    assert figures["cpu_s"] >= 0
    assert (tmp_path / "child.log").read_text().strip() == "done"


def test_a_childs_figure_is_its_own_not_the_memory_of_the_process_that_started_it(tmp_path):
    ballast = bytearray(400 * 2**20)  # this process's peak: a child started from here must not inherit it
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    figures = run_measured(python("print('small')"), tmp_path / "small.log", timeout_s=60)
    assert figures["peak_rss_mb"] < 100, figures
    del ballast


def test_a_failing_child_says_why_and_a_stuck_one_is_killed_with_its_children(tmp_path):
    failed = run_measured(python("import sys; print('bad input: no events'); sys.exit(3)"), tmp_path / "a.log", 60)
    assert failed["exit_code"] == 3 and "exit code 3" in failed["error"] and "no events" in failed["error"]

    pid_file = tmp_path / "grandchild.pid"
    started = time.perf_counter()
    stuck = run_measured(
        python(f"""
            import subprocess, sys, time
            grandchild = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
            open({str(pid_file)!r}, "w").write(str(grandchild.pid))
            time.sleep(120)
        """),
        tmp_path / "b.log",
        timeout_s=5,
    )
    assert "timed out after 5 s" in stuck["error"]
    assert time.perf_counter() - started < 30
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # killed with its group (a zombie until init reaps it)
        if not running(grandchild):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the stuck child's own child {grandchild} is still running")


def test_ctrl_c_stops_the_child_and_still_reports_what_it_used(tmp_path):
    parent = subprocess.Popen(
        python(f"""
            import json, sys
            from pathlib import Path
            from training.bench.scale import run_measured
            child = [sys.executable, "-c", "print('started', flush=True); import time; time.sleep(120)"]
            print(json.dumps(run_measured(child, Path({str(tmp_path / "child.log")!r}), timeout_s=300)), flush=True)
        """),
        stdout=subprocess.PIPE,
        text=True,
    )
    for _ in range(100):  # until the child runs
        if "started" in (tmp_path / "child.log").read_text() if (tmp_path / "child.log").exists() else False:
            break
        time.sleep(0.1)
    parent.send_signal(signal.SIGINT)
    out, _ = parent.communicate(timeout=30)
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["interrupted"] and "interrupted (Ctrl-C)" in figures["error"] and figures["peak_rss_mb"] > 0


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def test_a_day_of_new_events_comes_after_the_world_from_its_users_and_items(tmp_path):
    world = tmp_path / "world"
    write_scale_world(ScaleWorld(items=500, users=400, events=20_000, chunk_users=100), world, log=lambda _: None)
    n = write_day_of_events(world / "events", tmp_path / "inbox" / "day.parquet", share=0.05)
    events = pl.read_parquet(world / "events")
    day = pl.read_parquet(tmp_path / "inbox" / "day.parquet")
    assert day.height == n and 0.03 * events.height < n < 0.07 * events.height
    assert day["timestamp"].min() > events["timestamp"].max()
    assert day["timestamp"].max() <= events["timestamp"].max() + 86_400
    assert day["timestamp"].is_sorted()
    assert set(day["user_id"]) <= set(events["user_id"]) and set(day["item_id"]) <= set(events["item_id"])


def test_a_failed_stage_is_recorded_and_the_stages_after_it_are_skipped(tmp_path):
    # a cached world whose event files are missing: synth is reused, the import fails, nothing else runs
    world = tmp_path / "work" / "1k" / "world"
    world.mkdir(parents=True)
    summary = {"world": {"items": 1000, "users": 1000, "events": 20_000}, "wall_s": 1.5, "peak_rss_mb": 99.0}
    (world / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "scale.json"
    run_scale(
        parse_sizes("1k"), out, tmp_path / "work", command="recsys benchmark scale --sizes 1k", log=lambda _: None
    )

    document = json.loads(out.read_text())
    assert document["command"] == "recsys benchmark scale --sizes 1k" and document["date"] and document["hardware"]
    (size,) = document["sizes"]
    stages = size["stages"]
    assert list(stages) == list(STAGES)
    assert (
        stages["synth"]["cached"]
        and stages["synth"]["peak_rss_mb"] == 99.0
        and "summary.json" in stages["synth"]["source"]
    )
    assert "error" in stages["import_validate"] and stages["import_validate"]["peak_rss_mb"] > 0
    for later in STAGES[2:]:
        assert "skipped" in stages[later], later
    assert size["index"] is None and size["train_tokens_per_s"]["full"] is None


def test_the_command_refuses_a_bad_size():
    out = subprocess.run(
        [sys.executable, "-m", "recsys.cli", "benchmark", "scale", "--sizes", "ten"], capture_output=True, text=True
    )
    assert out.returncode == 1 and "ten" in out.stderr and "10k" in out.stderr


def test_a_size_measured_again_replaces_its_entry_and_the_others_keep_the_command_that_measured_them(tmp_path):
    from training.bench.scale import eval_users, kept_sizes

    earlier = {
        "command": "recsys benchmark scale --sizes 10k,1m",
        "date": "2026-12-01T00:00:00+00:00",
        "sizes": [{"items": 10_000, "stages": {}}, {"items": 1_000_000, "stages": {}}],
    }
    path = tmp_path / "scale.json"
    path.write_text(json.dumps(earlier))
    kept = kept_sizes(path, {1_000_000})
    assert kept == [{"command": earlier["command"], "date": earlier["date"], "items": 10_000, "stages": {}}]
    assert kept_sizes(tmp_path / "missing.json", {10_000}) == []
    # the nightly's and the report's evaluation sample shrinks only where users x items would pass 2e9
    assert [eval_users(n) for n in (10_000, 100_000, 1_000_000, 10_000_000)] == [20_000, 20_000, 2_000, 1_000]
