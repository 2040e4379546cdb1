"""`recsys benchmark serving-scale`: replicas on the shared Redis event store under a mixed load, driven by locust.

Two setups serve the same bundle, one after the other, on loopback:
- "shared-redis": a real redis-server (append-only file, fsync before every reply) and two `recsys serve` replicas
  (one worker each) with RECSYS_STATE_URL pointing at it;
- "embedded-journal": one replica with its own SQLite journal (no state URL), the single-machine deployment.
Each is driven at fixed request rates by locust in its own process (benchmarks/load/locustfile.py): 90% reads
(`GET /v1/users/{user}/recommendations?k=10`), 10% writes (`POST /v1/events`, one new event), round robin over
the replicas. Per run: achieved rate, p50/p99 from locust's stats CSV, failures, and the acknowledged events that
are not in the store afterwards (lost_events, expected 0).

A separate phase (skipped with --no-histories) measures what a worker pays for 1M users' histories, each in a
fresh process: "before", the old layout (histories.parquet read into a dict of lists), and "after", the
memory-mapped arrays of user_histories/ (StoredHistories.open): private memory (RssAnon), open time, lookup p99.
The 1M-user data is generated once and cached under the work directory.

The default rates, 50 and 150 req/s, are what a 2-core machine sustains with the servers, Redis and locust all on
it: measured there, both setups keep up at 200 req/s with p50 above 100 ms, and reach about 200 of 300 asked.
"""

from __future__ import annotations

import csv
import importlib.metadata
import importlib.util
import json
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import numpy as np
import polars as pl

from recsys import bundle
from recsys.bundle.histories import StoredHistories, write_histories
from recsys.bundle.layout import HISTORIES, ITEM_IDS
from recsys.data.event_logs import STREAM_KEY
from recsys.durable import atomic_write_json
from recsys.harness import RedisServer, ServerProcess
from recsys.runinfo import hardware, now_iso, results_path
from recsys.settings import REPO_ROOT, get_settings
from serving.bench.benchmark import single_root

# Outside the packages on purpose: importing locust patches the interpreter (gevent), so nothing may import it
# but locust itself.
LOCUSTFILE = REPO_ROOT / "benchmarks" / "load" / "locustfile.py"
READ_SHARE = 0.9
RATE_PER_LOCUST_USER = 2.0  # tasks/s of each simulated client: 300 req/s = 150 clients, each waiting up to 0.5 s
STOP_TIMEOUT_S = 5  # at the end of a run, clients finish the request in flight (its ack is then counted)
MAX_USERS_IN_WORKLOAD = 100_000  # users written to the locustfile's user list (a sample of a large bundle)
SERVER_START_S = 180.0  # a replica on a busy 2-core machine loads its bundle in seconds; this bounds a hang
WARMUP_REQUESTS = 50  # per replica, before the first run: the first requests allocate

HISTORY_USERS, HISTORY_LENGTH, HISTORY_ITEMS = 1_000_000, 50, 12_000
HISTORY_LOOKUPS = 20_000
HISTORIES_READY = "complete"  # written last into the cache folder: a half-written cache is rebuilt

Log = Callable[[str], object]


# -- the load: locust in its own process ---------------------------------------------------------------------
def locust_version() -> str:
    if importlib.util.find_spec("locust") is None:
        raise RuntimeError("locust is not installed: pip install 'locust>=2.30' (it is in the dev extra)")
    return importlib.metadata.version("locust")


def write_workload(bundle_dir: Path, work: Path) -> tuple[Path, Path, int]:
    """The user and item lists the locustfile draws from (one ID a line); the number of users in the bundle."""
    users = pl.read_parquet(bundle_dir / HISTORIES, columns=["user_id"])["user_id"].cast(pl.String).to_list()
    items = json.loads((bundle_dir / ITEM_IDS).read_text())
    if not users or not items:
        raise ValueError(f"{bundle_dir} has {len(users)} users and {len(items)} items: nothing to request")
    sample = random.Random(0).sample(users, min(len(users), MAX_USERS_IN_WORKLOAD))
    users_file, items_file = work / "users.txt", work / "items.txt"
    users_file.write_text("".join(f"{u}\n" for u in sample))
    items_file.write_text("".join(f"{i}\n" for i in items))
    return users_file, items_file, len(users)


def read_locust_stats(csv_prefix: Path) -> dict[str, dict]:
    """locust's `<prefix>_stats.csv` by row name ("Aggregated" is the total): counts, rate, p50/p99 in ms."""
    rows = {}
    with open(f"{csv_prefix}_stats.csv", newline="") as f:
        for row in csv.DictReader(f):

            def number(column: str, row: dict = row) -> float | None:
                value = row.get(column, "N/A")
                return None if value in ("", "N/A") else float(value)

            rows[row["Name"]] = {
                "requests": int(row["Request Count"]),
                "failures": int(row["Failure Count"]),
                "rps": round(number("Requests/s") or 0.0, 1),
                "p50_ms": number("50%"),  # locust keeps response times in whole milliseconds
                "p99_ms": number("99%"),
                "p999_ms": number("99.9%"),
                "max_ms": round(number("Max Response Time") or 0.0, 1),
            }
    if "Aggregated" not in rows:
        raise RuntimeError(f"{csv_prefix}_stats.csv has no Aggregated row: locust ended before any request")
    return rows


def read_locust_failures(csv_prefix: Path, limit: int = 5) -> list[str]:
    path = Path(f"{csv_prefix}_failures.csv")
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return [f"{r['Method']} {r['Name']}: {r['Error']} (x{r['Occurrences']})" for r in csv.DictReader(f)][:limit]


def run_locust(
    base_urls: list[str], rate_rps: float, duration_s: float, work: Path, users_file: Path, items_file: Path
) -> dict:
    """One headless locust run at a fixed total rate against these replicas; its stats and acknowledged events."""
    work.mkdir(parents=True, exist_ok=True)
    clients = max(1, math.ceil(rate_rps / RATE_PER_LOCUST_USER))
    env = {
        **os.environ,
        "SCALE_BENCH_BASE_URLS": ",".join(base_urls),
        "SCALE_BENCH_USERS_FILE": str(users_file),
        "SCALE_BENCH_ITEMS_FILE": str(items_file),
        "SCALE_BENCH_RATE_PER_USER": repr(rate_rps / clients),  # so that clients × rate per client = rate_rps
        "SCALE_BENCH_READ_SHARE": repr(READ_SHARE),
        "SCALE_BENCH_ACKED_DIR": str(work / "acked"),
    }
    prefix = work / "locust"
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"]
    command += ["--users", str(clients), "--spawn-rate", str(clients), "--run-time", f"{duration_s:g}s"]
    command += ["--stop-timeout", str(STOP_TIMEOUT_S), "--csv", str(prefix), "--host", base_urls[0]]
    # stats from the moment every client is running: the rate is not diluted by locust's start and the ramp
    command += ["--reset-stats"]
    command += ["--loglevel", "WARNING", "--logfile", str(work / "locust.log")]
    log_path = work / "locust.out"
    with log_path.open("wb") as out:
        try:
            # locust exits 1 when any request failed: failures are a figure of the run, not an error of it
            subprocess.run(command, env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                           timeout=duration_s + STOP_TIMEOUT_S + 120)  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"locust did not finish a {duration_s:g} s run: see {log_path}") from exc
    if not Path(f"{prefix}_stats.csv").exists():
        raise RuntimeError(f"locust wrote no stats:\n{log_path.read_text(errors='replace')[-3000:]}")
    acked = [line for path in sorted((work / "acked").glob("acked-*.txt")) for line in path.read_text().split()]
    return {
        "clients": clients,
        "stats": read_locust_stats(prefix),
        "failures": read_locust_failures(prefix),
        "acked": acked,
    }


def warm_up(base_urls: list[str], users_file: Path) -> None:
    """A few reads per replica before the measured runs: the first requests of a fresh worker allocate."""
    users = users_file.read_text().splitlines()[:WARMUP_REQUESTS]
    for base in base_urls:
        for user in users:
            url = f"{base}/v1/users/{quote(user, safe='')}/recommendations?k=10"
            with urllib.request.urlopen(url, timeout=30) as response:
                response.read()


# -- what the stores hold afterwards ---------------------------------------------------------------------------
def redis_event_ids(url: str) -> set[str]:
    """Every event_id in the shared store's stream (field `e`), what the nightly reads."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=30)
    ids: set[str] = set()
    try:
        start = "-"
        while True:
            entries = client.xrange(STREAM_KEY, min=start, max="+", count=10_000)
            ids.update(fields[b"e"].decode() for _, fields in entries)
            if len(entries) < 10_000:
                return ids
            start = f"({entries[-1][0].decode()}"  # exclusive: after the last one read
    finally:
        client.close()


def journal_event_ids(path: Path) -> set[str]:
    """Every event_id in an embedded SQLite journal (read-only; the replica may still be running)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        return {row[0] for row in conn.execute("SELECT event_id FROM events")}
    finally:
        conn.close()


# -- the setups --------------------------------------------------------------------------------------------------
def measure_setup(
    setup: str,
    base_urls: list[str],
    stored_ids: Callable[[], set[str]],
    args: dict,
    work: Path,
    log: Log,
) -> list[dict]:
    """Each rate in turn against running replicas; lost = acknowledged by a replica, absent from the store."""
    warm_up(base_urls, args["users_file"])
    runs = []
    for rate in args["rates"]:
        result = run_locust(
            base_urls, rate, args["duration_s"], work / f"{setup}-{rate:g}", args["users_file"], args["items_file"]
        )
        stored = stored_ids()
        total = result["stats"]["Aggregated"]
        run = {
            "setup": setup,
            "replicas": len(base_urls),
            "read_share": READ_SHARE,
            "rate_rps": rate,
            "achieved_rps": total["rps"],
            "p50_ms": total["p50_ms"],
            "p99_ms": total["p99_ms"],
            "errors": total["failures"],
            "acked_events": len(result["acked"]),
            "lost_events": sum(1 for e in result["acked"] if e not in stored),
            "requests": total["requests"],
            "locust_clients": result["clients"],
            "duration_s": args["duration_s"],
            "by_request": {name: row for name, row in result["stats"].items() if name != "Aggregated"},
        }
        if result["failures"]:
            run["error_samples"] = result["failures"]
        log(
            f"  {setup} x{len(base_urls)} @ {rate:g} req/s: {run['achieved_rps']:,.1f} req/s achieved, "
            f"p50 {run['p50_ms']} ms, p99 {run['p99_ms']} ms, {run['errors']} errors, "
            f"{run['acked_events']} events acknowledged, {run['lost_events']} lost"
        )
        runs.append(run)
    return runs


def stop_cleanly(server: ServerProcess | RedisServer, name: str, log: Log) -> None:
    code = server.stop()
    if code not in (0, None):
        log(f"  warning: {name} exited with {code} on SIGTERM (log: {server.log_path})")


def shared_redis_setup(root: Path, work: Path, args: dict, log: Log, replicas: int = 2) -> list[dict]:
    store = RedisServer(work / "redis").start()
    servers: list[ServerProcess] = []
    try:
        for n in range(replicas):
            server = ServerProcess(root, work / f"replica-{n}", env={"RECSYS_STATE_URL": store.url}, workers=1)
            servers.append(server.start(timeout_s=SERVER_START_S))
        return measure_setup(
            "shared-redis", [s.url for s in servers], lambda: redis_event_ids(store.url), args, work, log
        )
    finally:
        for n, server in enumerate(servers):
            stop_cleanly(server, f"replica {n}", log)
        stop_cleanly(store, "redis-server", log)


def embedded_journal_setup(root: Path, work: Path, args: dict, log: Log) -> list[dict]:
    # empty, not unset: a RECSYS_STATE_URL in this process's environment must not reach this replica
    no_store = {"RECSYS_STATE_URL": ""}
    server = ServerProcess(root, work / "embedded", env=no_store, workers=1).start(timeout_s=SERVER_START_S)
    try:
        return measure_setup(
            "embedded-journal", [server.url], lambda: journal_event_ids(server.journal), args, work, log
        )
    finally:
        stop_cleanly(server, "the embedded-journal replica", log)


# -- histories of 1M users: memory per worker and reload time, before and after --------------------------------
def histories_1m(cache: Path, users: int = HISTORY_USERS, length: int = HISTORY_LENGTH) -> Path:
    """`users` users × `length` random items in both layouts (histories.parquet and user_histories/), cached."""
    folder = cache / f"histories-{users}x{length}"
    if (folder / HISTORIES_READY).exists():
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    item_ids = [f"SKU-{i:06d}" for i in range(HISTORY_ITEMS)]
    rows = np.random.default_rng(0).integers(0, HISTORY_ITEMS, (users, length), dtype=np.int32)
    user_ids = [f"U-{i:07d}" for i in range(users)]
    item_column = pl.Series(item_ids).gather(rows.ravel()).reshape((users, length)).cast(pl.List(pl.String))
    pl.DataFrame({"user_id": user_ids, "item_ids": item_column}).write_parquet(folder / HISTORIES)
    write_histories(folder / "user_histories", user_ids, list(rows))
    (folder / ITEM_IDS).write_text(json.dumps(item_ids))
    (folder / HISTORIES_READY).write_text(f"{users} users x {length} items\n")
    return folder


def _rss_mb(kind: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(kind + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {kind}: this measurement needs Linux")


def measure_histories_here(folder: str, layout: str) -> None:
    """In a fresh process (run by `measure_histories`): open the histories one way, print the costs as JSON.

    "dict": what a worker did before the arrays, histories.parquet into {user_id: [item_id, ...]};
    "mapped": StoredHistories.open on user_histories/, what a worker does now.
    """
    root = Path(folder)
    item_ids = json.loads((root / ITEM_IDS).read_text())
    private_before = _rss_mb("RssAnon")
    started = time.perf_counter()
    if layout == "dict":
        frame = pl.read_parquet(root / HISTORIES)
        histories = dict(zip(frame["user_id"].to_list(), frame["item_ids"].to_list(), strict=True))
        del frame
    elif layout == "mapped":
        histories = StoredHistories.open(root / "user_histories", item_ids)
    else:
        raise ValueError(f"layout must be dict or mapped, not {layout!r}")
    open_s = time.perf_counter() - started
    private_open = _rss_mb("RssAnon") - private_before
    draw = random.Random(0)
    n_users = len(histories)
    lookups = [f"U-{draw.randrange(n_users):07d}" for _ in range(HISTORY_LOOKUPS)]
    timings = []
    for user in lookups:
        t = time.perf_counter()
        histories.get(user)
        timings.append(time.perf_counter() - t)
    us = np.asarray(timings) * 1e6
    result = {
        "layout": layout,
        "users": n_users,
        "open_s": round(open_s, 4),
        "private_rss_mb_after_open": round(private_open, 1),
        # after the lookups too: what a worker that has served requests holds privately
        "private_rss_mb": round(_rss_mb("RssAnon") - private_before, 1),
        "file_backed_rss_mb": round(_rss_mb("RssFile"), 1),  # page cache, shared by every worker
        "lookups": HISTORY_LOOKUPS,
        "lookup_p50_us": round(float(np.percentile(us, 50)), 2),
        "lookup_p99_us": round(float(np.percentile(us, 99)), 2),
    }
    print(json.dumps(result), flush=True)


def measure_histories(folder: Path, layout: str, timeout_s: float = 600) -> dict:
    code = "import sys; from serving.bench.scale import measure_histories_here; measure_histories_here(*sys.argv[1:])"
    done = subprocess.run(
        [sys.executable, "-c", code, str(folder), layout],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    if done.returncode != 0:
        raise RuntimeError(f"measuring the {layout} histories failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def histories_phase(cache: Path, log: Log, users: int = HISTORY_USERS) -> dict:
    started = time.perf_counter()
    folder = histories_1m(cache, users)
    log(f"histories: {users:,} users x {HISTORY_LENGTH} items at {folder} ({time.perf_counter() - started:.0f} s)")
    before, after = measure_histories(folder, "dict"), measure_histories(folder, "mapped")
    for name, m in (("before (dict of lists)", before), ("after (memory-mapped)", after)):
        log(
            f"  {name}: {m['private_rss_mb']:,.1f} MB private per worker, open {m['open_s']:.3f} s, "
            f"lookup p99 {m['lookup_p99_us']:.1f} us"
        )
    return {"users": users, "items_per_user": HISTORY_LENGTH, "before": before, "after": after}


# -- the whole benchmark ------------------------------------------------------------------------------------------
def run_serving_scale(
    bundle_dir: Path,
    out_path: Path | None,
    *,
    rates: list[float] = (50.0, 150.0),
    duration_s: float = 20.0,
    histories: bool = True,
    publish: bool = False,
    command: str = "recsys benchmark serving-scale",
    log: Log = print,
) -> dict:
    """Both setups at each rate, then (unless `histories` is False) the 1M-user histories phase; the JSON."""
    rates = [float(r) for r in rates]
    if not rates or any(r <= 0 for r in rates):
        raise ValueError(f"rates must be positive requests per second, got {rates}")
    if duration_s <= 0:
        raise ValueError(f"duration must be positive seconds, got {duration_s}")
    if shutil.which("redis-server") is None:
        raise RuntimeError("redis-server is not installed: apt-get install redis-server (make test installs it)")
    load_tool = f"locust {locust_version()}"
    bundle_dir = bundle.resolve(bundle_dir)
    manifest = bundle.verify(bundle_dir)
    started = time.perf_counter()
    document: dict = {
        "date": now_iso(),
        "hardware": hardware(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "command": command,
        "store": "redis",
        "load_tool": load_tool,
        "bundle": {"version": manifest.get("version", bundle_dir.name)},
        "settings": {
            "rates_rps": rates,
            "duration_s": duration_s,
            "read_share": READ_SHARE,
            "reads": "GET /v1/users/{user_id}/recommendations?k=10, users drawn from the bundle's",
            "writes": "POST /v1/events, one event with a new event_id (uuid4), a random known user and item",
            "clients": f"locust FastHttpUser, constant_throughput({RATE_PER_LOCUST_USER:g}/s) each, round robin "
            "over the replicas, in its own process on the same machine",
            "workers_per_replica": 1,
            "redis": "appendonly yes, appendfsync always (fsync before every reply), loopback",
            "percentiles": "locust's stats CSV (Aggregated row; by_request per route), whole milliseconds, from "
            "the moment every client runs (--reset-stats); acked and lost events cover the whole run",
        },
    }
    busy = os.getloadavg()[0]
    if busy > 0.5 * (os.cpu_count() or 1):
        log(f"warning: load average {busy:.1f} on {os.cpu_count()} cores: other work will distort these figures")
    with tempfile.TemporaryDirectory(prefix="bench-serving-scale-") as tmp:
        work = Path(tmp)
        users_file, items_file, n_users = write_workload(bundle_dir, work)
        document["bundle"]["users"] = n_users
        args = {"rates": rates, "duration_s": duration_s, "users_file": users_file, "items_file": items_file}
        root = single_root(bundle_dir, work)
        rate_text = ", ".join(f"{r:g}" for r in rates)
        log(f"serving-scale: bundle {bundle_dir.name}, {n_users:,} users, {rate_text} req/s, {duration_s:g} s each")
        runs = shared_redis_setup(root, work, args, log)
        runs += embedded_journal_setup(root, work, args, log)
    document["runs"] = runs
    if histories:
        measured = histories_phase(get_settings().work_dir / "cache", log)
        before, after = measured["before"], measured["after"]
        document["histories_rss_per_worker_mb"] = {
            "users": measured["users"],
            "before": before["private_rss_mb"],
            "after": after["private_rss_mb"],
        }
        document["reload_s"] = {"users": measured["users"], "before": before["open_s"], "after": after["open_s"]}
        document["histories"] = {
            **measured,
            "before_layout": "histories.parquet read into a dict of lists (the worker before user_histories/)",
            "after_layout": "user_histories/ memory-mapped (StoredHistories.open)",
            "measured": "each layout in a fresh process: RssAnon delta (private memory), open time, "
            f"{HISTORY_LOOKUPS:,} lookups of random users",
        }
    else:
        document["histories_rss_per_worker_mb"] = None  # skipped: --no-histories
        document["reload_s"] = None
    document["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    document["wall_s"] = round(time.perf_counter() - started, 1)
    target = atomic_write_json(results_path("serving-scale", publish, out_path), document)
    log(f"results written to {target} ({document['wall_s']:.0f} s)")
    return document
