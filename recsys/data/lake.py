"""The event lake: every event the nightly job has ever ingested, as hive-partitioned parquet, exactly once.

One ingest is one partition, `events/ingest=NNNNNN/` (`part-0.parquet` + `_ingest.json`, what it covered), and
its rejects in `rejects/`. The watermark is the union of the committed partitions' metadata, so there is no
separate watermark file that could disagree with the data. Readers use polars lazy scans (`scan_events`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from recsys.bundle import sha256_of
from recsys.data.event_logs import check_not_behind, open_event_log
from recsys.data.importers import RawData, read_dataset
from recsys.data.validate import EVENT_SCHEMA, validate
from recsys.durable import atomic_write, fsync_path

EVENTS_DIR, REJECTS_DIR = "events", "rejects"
SUCCESS = "_SUCCESS"  # a partitioned-parquet delivery is complete when its writer has put this file in it
PART_FILE, META_FILE = "part-0.parquet", "_ingest.json"
EVENT_FILE_FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
RAW_COLUMNS = ("user_id", "item_id", "timestamp", "event_type", "value")


@dataclass
class Watermark:
    """What the committed partitions cover: each event store up to its seq, and these files."""

    # event store location ("sqlite" or a Redis URL) -> {"seq": last ingested, "store_id": its identity then}
    stores: dict[str, dict[str, Any]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    partitions: int = 0
    next_index: int = 1

    @property
    def journal_seq(self) -> int:
        return max((s["seq"] for s in self.stores.values()), default=0)

    def store(self, location: str) -> dict[str, Any]:
        return self.stores.get(location, {"seq": 0, "store_id": None})


def partitions(lake: str | Path) -> list[dict[str, Any]]:
    """Metadata of every committed ingest partition, in ingest order."""
    root = Path(lake) / EVENTS_DIR
    metas = []
    for meta in sorted(root.glob(f"ingest=*/{META_FILE}")):
        metas.append(json.loads(meta.read_text()))
    return sorted(metas, key=lambda m: m["index"])


def watermark(lake: str | Path) -> Watermark:
    mark = Watermark()
    for meta in partitions(lake):
        journal = meta["journal"]
        location = journal.get("location", "sqlite")  # partitions from before the shared store: the journal
        if location is not None and journal["upto"] >= mark.store(location)["seq"]:
            mark.stores[location] = {"seq": journal["upto"], "store_id": journal.get("store_id")}
        mark.files.update(meta["files"])
        mark.partitions += 1
        mark.next_index = max(mark.next_index, meta["index"] + 1)
    return mark


def inbox_files(inbox: str | Path | None) -> list[Path]:
    """Complete deliveries in the inbox, by name: event files and partitioned-parquet folders that hold a
    _SUCCESS marker. Writers create files under a hidden, .tmp or .part name and rename them when complete."""
    if inbox is None or not Path(inbox).is_dir():
        return []
    found = []
    for p in Path(inbox).iterdir():
        if p.name.startswith(".") or p.name.endswith((".tmp", ".part")):
            continue
        if (p.is_file() and p.suffix.lower() in EVENT_FILE_FORMATS) or (p.is_dir() and (p / SUCCESS).exists()):
            found.append(p)
    return sorted(found)


def delivery_sha(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative path + content), so a changed delivery is noticed."""
    if path.is_file():
        return sha256_of(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{file.relative_to(path).as_posix()}:{sha256_of(file)}\n".encode())
    return digest.hexdigest()


def new_files(inbox: str | Path | None, mark: Watermark) -> dict[str, Path]:
    """Inbox files not yet ingested (name -> path); a changed ingested file is an error (never re-read silently)."""
    fresh = {}
    for path in inbox_files(inbox):
        known = mark.files.get(path.name)
        if known is None:
            fresh[path.name] = path
        elif known != delivery_sha(path):
            raise ValueError(
                f"{path} was ingested before with other content (sha256 {known[:12]}…); files in the inbox are "
                "immutable once ingested: put new events in a new file with a new name"
            )
    return fresh


def _read_file(path: Path) -> pl.DataFrame:
    if path.is_dir():  # partitioned parquet: a lazy scan, only the contract's columns are read
        scan = pl.scan_parquet(path / "**" / "*.parquet", hive_partitioning=True)
        names = scan.collect_schema().names()
        # cast inside the scan: the typed columns are never held whole beside their strings
        raw = scan.select([pl.col(c).cast(pl.String) for c in RAW_COLUMNS if c in names]).collect()
        raw = raw.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
    else:
        raw = read_dataset(path, EVENT_FILE_FORMATS[path.suffix.lower()]).events
    columns = [c for c in RAW_COLUMNS if c in raw.columns]
    return raw.select(*columns, pl.col("row").alias("source_row"), pl.lit(path.name).alias("source"))


def find_partition(lake: str | Path, run_id: str) -> dict[str, Any] | None:
    for meta in partitions(lake):
        if meta["run_id"] == run_id:
            return meta
    return None


def ingest(
    lake: str | Path,
    run_id: str,
    inbox: str | Path | None,
    journal: str | Path | None,
    catalogue: pl.DataFrame | None = None,
    max_reject_rate: float = 0.05,
    rejects_path: str | Path | None = None,
) -> dict[str, Any]:
    """Validate everything new since the watermark and commit it as one partition; returns its metadata.

    Idempotent per run: a partition this run already committed is returned as it is. With nothing new, no
    partition is written and the metadata says `events: 0`. Raises RejectRateExceeded (nothing committed)
    when the increment has too many bad rows; the rejects then go to `rejects_path`.
    """
    lake = Path(lake)
    done = find_partition(lake, run_id)
    if done is not None:
        return {**done, "reused": True}
    events_root = lake / EVENTS_DIR
    events_root.mkdir(parents=True, exist_ok=True)
    for stale in events_root.glob(".tmp-*"):  # a crashed attempt; the caller holds the nightly lock
        shutil.rmtree(stale)

    mark = watermark(lake)
    files = new_files(inbox, mark)
    frames = [_read_file(path) for path in files.values()]
    # Both stores give every accepted event the next seq in one atomic step and never reuse one: an event
    # accepted after `head` is read has a larger seq, so reading (watermark, head] now and the rest next time
    # skips nothing.
    log = open_event_log(journal)
    taken = {"location": None, "store_id": None, "after": 0, "upto": 0}
    if log is not None:
        ingested = mark.store(log.location)
        store_id, head = log.store_id(), log.head()
        check_not_behind(log, head, store_id, ingested["seq"], ingested["store_id"])
        taken = {"location": log.location, "store_id": store_id, "after": ingested["seq"], "upto": head}
        if head > ingested["seq"]:
            frames.append(log.read(ingested["seq"], head))
    meta: dict[str, Any] = {
        "index": mark.next_index,
        "run_id": run_id,
        "created_at": datetime.now(UTC).isoformat(),
        "files": {name: delivery_sha(path) for name, path in files.items()},
        "journal": taken,
        "input_rows": 0,
        "events": 0,
        "rejected": 0,
    }
    frames = [f for f in frames if f.height]
    if not frames and not files:
        return {**meta, "partition": None}

    if frames:
        raw = pl.concat(frames, how="diagonal_relaxed")
    else:
        raw = pl.DataFrame(
            schema={**dict.fromkeys(RAW_COLUMNS, pl.String), "source": pl.String, "source_row": pl.Int64}
        )
    raw = raw.with_row_index("row").with_columns(pl.col("row").cast(pl.Int64))
    if raw.height:
        checked = validate(
            RawData(raw.drop("source", "source_row"), catalogue),
            max_reject_rate=max_reject_rate,
            rejects_path=rejects_path,
        )
        events = checked.events.join(raw.select("row", "source", "source_row"), on="row", how="left")
        rejects, summary = checked.rejects, checked.summary
    else:  # only empty files: commit them anyway, so they count as taken
        events = pl.DataFrame(schema={**EVENT_SCHEMA, "source": pl.String, "source_row": pl.Int64})
        rejects, summary = pl.DataFrame(), {"reasons": {}}
    meta.update(input_rows=raw.height, events=events.height, rejected=rejects.height, reasons=summary["reasons"])

    name = f"ingest={meta['index']:06d}"
    atomic_write(lake / REJECTS_DIR / f"{name}.parquet", rejects.write_parquet)

    tmp = events_root / f".tmp-{name}"
    tmp.mkdir()
    events.write_parquet(tmp / PART_FILE)
    (tmp / META_FILE).write_text(json.dumps({**meta, "partition": name}, indent=2))
    for path in (tmp / PART_FILE, tmp / META_FILE):
        fsync_path(path)
    # The commit point: a crash before it leaves no trace (the next attempt recomputes the same increment);
    # after it, the partition is the record, and a rerun of this run finds it (find_partition).
    os.rename(tmp, events_root / name)
    fsync_path(events_root)
    if log is not None and taken["after"]:
        # what earlier partitions took is committed in the lake: the shared store may drop it (one run late,
        # so a partition lost with its disk could still be re-read while the store keeps the day)
        log.trim(taken["after"])
    return {**meta, "partition": name}


def scan_events(path: str | Path) -> pl.LazyFrame:
    """Lazy scan of partitioned parquet (a lake root, its events folder, any hive-partitioned folder) or a file."""
    path = Path(path)
    if path.is_file():
        return pl.scan_parquet(path)
    if (path / EVENTS_DIR).is_dir():
        path = path / EVENTS_DIR
    files = sorted(path.glob("**/*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet files under {path}")
    return pl.scan_parquet(path / "**" / "*.parquet", hive_partitioning=True)


def lake_events(lake: str | Path) -> pl.DataFrame:
    """Every ingested event in ingest order, with a global `row` (ingest, then row within it)."""
    return (
        scan_events(lake)
        .select("user_id", "item_id", "timestamp", "event_type", "value", "ingest", pl.col("row").alias("_row"))
        .sort("ingest", "_row")
        .with_row_index("row")
        .with_columns(pl.col("row").cast(pl.Int64))
        .drop("_row")
        .collect()
    )
