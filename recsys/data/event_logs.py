"""Where the nightly job reads the service's acknowledged events: the embedded SQLite journal or the shared Redis store.

Both number events with a gap-free, only-growing sequence (`seq`) and carry an identity (`store_id`) written
with the first event. The lake's watermark is (location, store_id, seq): the next run reads `seq > watermark`,
and a store whose head is behind the watermark, or whose identity changed, lost data; that is reported
(`EventLogLost`) rather than read as if it were new.

The Redis layout is defined here, once, because two sides use it: the service writes it (serving/shared_store.py)
and the nightly reads it. One Redis database per deployment; keys are prefixed `recsys:`.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import polars as pl

from recsys.settings import STATE_URL_SCHEMES

READ_CHUNK = 10_000

# -- the shared store's keys ------------------------------------------------------------------------------------
KEY_PREFIX = "recsys:"
STORE_ID_KEY = KEY_PREFIX + "store_id"  # a random identity, set with the first event (a wiped store loses it)
SEQ_KEY = KEY_PREFIX + "seq"  # INCR per accepted event: the watermark's sequence
STREAM_KEY = KEY_PREFIX + "events"  # every accepted event, stream ID "<seq>-0", read by the nightly
EVENT_KEY = KEY_PREFIX + "event:"  # + event_id -> payload JSON: the idempotency key (expires after the dedupe window)
USER_KEY = KEY_PREFIX + "user:"  # + user_id -> list of "<seq>|<received_at>|<item_id>", the live history


def payload_json(user_id: str, item_id: str, timestamp: float, event_type: str | None, value: float | None) -> str:
    """What a retry must repeat exactly, as one canonical string (compared byte for byte in the store)."""
    return json.dumps(
        [user_id, item_id, float(timestamp), event_type, None if value is None else float(value)],
        separators=(",", ":"),
    )


def public_location(url: str) -> str:
    """The store's URL without a password: safe for logs, manifests and the lake's watermark."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class EventLogLost(RuntimeError):
    """The event store holds less than the lake already ingested from it: it lost data (or was replaced)."""


class EventLog(Protocol):
    location: str  # what the watermark is kept per: "sqlite" or the Redis URL without password

    def store_id(self) -> str | None: ...

    def head(self) -> int: ...

    def read(self, after: int, upto: int) -> pl.DataFrame: ...

    def trim(self, upto: int) -> None: ...


RAW_SCHEMA = {
    "source_row": pl.Int64,
    "user_id": pl.String,
    "item_id": pl.String,
    "timestamp": pl.Float64,
    "event_type": pl.String,
    "value": pl.Float64,
}


def as_raw(frame: pl.DataFrame) -> pl.DataFrame:
    """Events in the importers' raw shape: every column a string, as if read from a delivered file."""
    # An integral timestamp is written without ".0" so validation reads it exactly as it reads a file's.
    ts = pl.col("timestamp")
    return frame.with_columns(
        pl.when(ts == ts.floor())
        .then(ts.cast(pl.Int64).cast(pl.String))
        .otherwise(ts.cast(pl.String))
        .alias("timestamp"),
        pl.col("value").cast(pl.String),
        pl.lit("journal").alias("source"),
    )


@dataclass
class SqliteJournal:
    """The service's embedded journal (serving/journal.py), read in read-only mode: WAL readers never block it."""

    path: Path
    location: str = "sqlite"

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10.0)

    def store_id(self) -> str | None:
        if not self.path.exists():
            return None
        conn = self._connect()
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()
        except sqlite3.OperationalError:  # a journal from before the identity was kept
            return None
        finally:
            conn.close()
        return row[0] if row else None

    def head(self) -> int:
        if not self.path.exists():
            return 0
        conn = self._connect()
        try:
            return conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        except sqlite3.OperationalError:  # no events table yet: the service never received an event
            return 0
        finally:
            conn.close()

    def read(self, after: int, upto: int) -> pl.DataFrame:
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT seq, user_id, item_id, timestamp, event_type, value FROM events "
                "WHERE seq > ? AND seq <= ? ORDER BY seq",
                (after, upto),
            ).fetchall()
        finally:
            conn.close()
        return as_raw(pl.DataFrame(rows, schema=RAW_SCHEMA, orient="row"))

    def trim(self, upto: int) -> None:
        """The journal keeps every row: its UNIQUE index is the idempotency guarantee for all time."""


class RedisEventLog:
    """The shared store's event stream (one XRANGE per chunk), read by the nightly with a synchronous client."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        import redis  # the shared store's client; only needed when one is configured

        self.location = public_location(url)
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def store_id(self) -> str | None:
        value = self.client.get(STORE_ID_KEY)
        return value.decode() if value is not None else None

    def head(self) -> int:
        return int(self.client.get(SEQ_KEY) or 0)

    def read(self, after: int, upto: int) -> pl.DataFrame:
        columns: dict[str, list] = {name: [] for name in RAW_SCHEMA}
        start = f"{after + 1}-0"
        while True:
            entries = self.client.xrange(STREAM_KEY, min=start, max=f"{upto}-0", count=READ_CHUNK)
            for entry_id, fields in entries:
                seq = int(entry_id.split(b"-", 1)[0])
                user_id, item_id, timestamp, event_type, value = json.loads(fields[b"p"])
                for name, cell in zip(RAW_SCHEMA, (seq, user_id, item_id, timestamp, event_type, value), strict=True):
                    columns[name].append(cell)
            if len(entries) < READ_CHUNK:
                break
            start = f"({entries[-1][0].decode()}"  # exclusive: after the last one read
        return as_raw(pl.DataFrame(columns, schema=RAW_SCHEMA))

    def trim(self, upto: int) -> None:
        """Drop stream entries up to `upto` (already in a committed lake partition): the store stays bounded."""
        self.client.xtrim(STREAM_KEY, minid=f"{upto + 1}-0", approximate=False)


def open_event_log(spec: str | Path | None) -> EventLog | None:
    """A Redis URL → the shared store; a path → the embedded journal; None → no live events to ingest."""
    if spec is None:
        return None
    text = str(spec)
    if urlsplit(text).scheme in STATE_URL_SCHEMES:
        return RedisEventLog(text)
    return SqliteJournal(Path(spec))


def check_not_behind(
    log: EventLog, head: int, store_id: str | None, ingested_seq: int, ingested_id: str | None
) -> None:
    """Refuse to read a store that holds less than what the lake already took from it."""
    if ingested_seq and head < ingested_seq:
        raise EventLogLost(
            f"the event store {log.location} holds events up to seq {head:,} but the lake already ingested up "
            f"to {ingested_seq:,}: the store lost data (restarted without its append-only file, or restored from "
            "an older copy). Nothing was ingested; restore the store, or archive the lake's watermark if the loss "
            "is accepted"
        )
    if ingested_id and store_id and store_id != ingested_id:
        raise EventLogLost(
            f"the event store {log.location} has identity {store_id} but the lake ingested from {ingested_id}: "
            "it was wiped or replaced since the last run. Nothing was ingested; restore the store, or archive the "
            "lake's watermark if the loss is accepted"
        )
