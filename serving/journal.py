"""The durable event journal: SQLite in WAL mode, one writer thread, group commit, idempotency keys.

SQLite rather than an append-only file: a UNIQUE index answers "was this key ever acknowledged?" on disk in the
insert's own transaction, a batch is all-or-nothing with crash recovery built in, several workers may write
one journal, and the nightly job reads it while the service writes (WAL readers never block the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from serving import metrics
from serving.live import LiveCutoff

log = logging.getLogger("recsys.journal")

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,          -- commit order; rows are never deleted, so it only grows
    event_id TEXT NOT NULL UNIQUE,    -- the client's idempotency key
    user_id TEXT NOT NULL,
    item_id TEXT NOT NULL,
    timestamp REAL NOT NULL,          -- when the event happened, Unix seconds (UTC)
    event_type TEXT,
    value REAL,
    received_at REAL NOT NULL,        -- when the service committed it, Unix seconds
    batch_id TEXT NOT NULL            -- the request that first delivered it (audit, tests)
);
CREATE INDEX IF NOT EXISTS events_received_at ON events (received_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);  -- store_id: this journal's identity
"""
INSERT = (
    "INSERT OR IGNORE INTO events (event_id, user_id, item_id, timestamp, event_type, value, received_at, batch_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_PAYLOAD = "SELECT event_id, user_id, item_id, timestamp, event_type, value FROM events WHERE event_id IN"
TAIL = "SELECT seq, user_id, item_id, timestamp, received_at FROM events WHERE seq > ? ORDER BY seq LIMIT ?"
TAIL_CHUNK = 10_000
MAX_GROUP = 256  # batches per transaction; bounds the time one commit holds the write lock
ACK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class EventRecord:
    event_id: str
    user_id: str
    item_id: str
    timestamp: float
    event_type: str | None = None
    value: float | None = None


def payload_of(event: EventRecord) -> tuple:
    """What a retry must repeat exactly: everything but the key, in the journal's column order."""
    return (event.user_id, event.item_id, event.timestamp, event.event_type, event.value)


@dataclass(frozen=True)
class JournalRow:
    """What the live histories need from a committed event."""

    seq: int
    user_id: str
    item_id: str
    timestamp: float
    received_at: float


@dataclass(frozen=True)
class AppendResult:
    accepted: int  # new events, now durable
    duplicates: int  # events whose key was already in the journal (a retry): not stored twice
    conflicts: tuple[str, ...] = ()  # keys already journalled with another payload: then nothing was stored


class JournalError(Exception):
    """The journal could not store a batch; nothing of it was stored (the transaction rolled back)."""


@dataclass
class _Job:
    events: Sequence[EventRecord]
    batch_id: str
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future


_STOP = object()


def _settle(future: asyncio.Future, result: AppendResult | None, error: Exception | None) -> None:
    if future.done():  # the request was cancelled (client gone); its events are durable all the same
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


def connect(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the journal's durability settings (also what tests and the nightly reader use)."""
    path = Path(path)
    if readonly:
        # check_same_thread=False: the service's reader is opened on the event loop and closed at shutdown
        # from a worker thread; it is never used by two threads at once.
        return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0, check_same_thread=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")  # WAL fsyncs every commit (NORMAL could lose acknowledged events)
    conn.execute("PRAGMA busy_timeout=10000")  # other workers' commits: wait, do not fail
    conn.executescript(SCHEMA)
    # A random identity, made once: a bundle's watermark names it, so a replaced journal is never read as this one
    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('store_id', ?)", (uuid.uuid4().hex,))
    return conn


class Journal:
    def __init__(
        self,
        path: str | Path,
        on_rows: Callable[[list[JournalRow]], None] | None = None,
        tail_interval_s: float = 0.5,
    ) -> None:
        self.path = Path(path)
        self.on_rows = on_rows or (lambda rows: None)
        self.tail_interval_s = tail_interval_s
        self.applied_seq = 0
        self.store_id: str | None = None  # known once started
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._conn: sqlite3.Connection | None = None  # the writer thread's
        self._reader: sqlite3.Connection | None = None  # the event loop's, for lag() at scrape time

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self, replay_from: Callable[[str], LiveCutoff] = lambda _store_id: LiveCutoff(None, 0.0)) -> None:
        """Open the journal, replay the events the serving bundle lacks into on_rows, start the writer.
        `replay_from(store_id)` says which those are (the bundle's watermark names a journal by its identity)."""
        self._thread = threading.Thread(target=self._run, args=(replay_from,), name="journal-writer", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise JournalError(f"cannot open the event journal: {self._start_error}") from None

    def stop(self) -> None:
        """Commit what is queued, then close (called at shutdown: queued events are not dropped)."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- the request side ---------------------------------------------------------------------------------
    async def append(self, events: Sequence[EventRecord], batch_id: str) -> AppendResult:
        """Store a batch durably; returns after COMMIT (fsync'd) and after the live histories have it."""
        if self._thread is None or not self._thread.is_alive():
            raise JournalError("the event journal is not running")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(events, batch_id, loop, future))
        metrics.JOURNAL_PENDING.inc()
        try:
            # A bound, so a stuck disk cannot hold requests forever; the client retries with the same keys,
            # and if the batch did commit meanwhile, the retry counts it as duplicates, never twice.
            return await asyncio.wait_for(future, ACK_TIMEOUT_S)
        except TimeoutError:
            raise JournalError(f"the journal did not confirm the batch in {ACK_TIMEOUT_S:.0f} s; retry it") from None
        finally:
            metrics.JOURNAL_PENDING.dec()

    # -- the writer thread --------------------------------------------------------------------------------
    def _run(self, replay_from: Callable[[str], LiveCutoff]) -> None:
        try:
            self._conn = connect(self.path)
            self.store_id = self._conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0]
            self._replay(replay_from(self.store_id))
        except Exception as exc:  # noqa: BLE001 - reported to start() and raised there
            self._start_error = exc
            self._ready.set()
            return
        self._ready.set()
        stopping = False
        while not stopping:
            try:
                first = self._queue.get(timeout=self.tail_interval_s)
            except queue.Empty:  # idle: pick up what other workers committed
                self._tail_safely()
                continue
            jobs: list[_Job] = []
            item = first
            while True:
                if item is _STOP:
                    stopping = True
                else:
                    jobs.append(item)
                if len(jobs) >= MAX_GROUP:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if jobs:
                self._commit(jobs)
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()

    def _replay(self, cutoff: LiveCutoff) -> None:
        assert self._conn is not None
        head = self._conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        if cutoff.seq is not None:
            self.applied_seq = min(cutoff.seq, head)
        else:
            first = self._conn.execute(
                "SELECT min(seq) FROM events WHERE received_at >= ?", (cutoff.received_ts,)
            ).fetchone()[0]
            self.applied_seq = (first - 1) if first is not None else head
        self._tail()
        metrics.JOURNAL_APPLIED.set(self.applied_seq)
        log.info("journal opened", extra={"fields": {"head_seq": head, "replayed_after_seq": cutoff.seq}})

    def _commit(self, jobs: list[_Job]) -> None:
        """Every batch that queued during the previous fsync, in one transaction (group commit: one fsync
        for all of them); each is acknowledged only after COMMIT and after the live histories have it."""
        assert self._conn is not None
        started = time.perf_counter()
        received_at = time.time()
        results: list[AppendResult] = []
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                self._conn.execute("SAVEPOINT batch")
                before = self._conn.total_changes
                self._conn.executemany(
                    INSERT,
                    [
                        (
                            e.event_id,
                            e.user_id,
                            e.item_id,
                            e.timestamp,
                            e.event_type,
                            e.value,
                            received_at,
                            job.batch_id,
                        )
                        for e in job.events
                    ],
                )
                accepted = self._conn.total_changes - before
                conflicts = self._conflicts(job.events) if accepted < len(job.events) else ()
                if conflicts:  # all or nothing: the client must see which keys it reused, then resend
                    self._conn.execute("ROLLBACK TO batch")
                    accepted = 0
                self._conn.execute("RELEASE batch")
                results.append(AppendResult(accepted, len(job.events) - accepted - len(conflicts), conflicts))
            self._conn.execute("COMMIT")  # synchronous=FULL: the WAL is fsync'd before this returns
        except Exception as exc:  # noqa: BLE001 - whatever failed, nothing of the group is stored or acked
            with contextlib.suppress(sqlite3.Error):
                self._conn.execute("ROLLBACK")
            log.error("journal commit failed", extra={"fields": {"error": str(exc), "batches": len(jobs)}})
            error = JournalError("the event journal could not store the batch; nothing was stored, retry it")
            for job in jobs:
                job.loop.call_soon_threadsafe(_settle, job.future, None, error)
            return
        metrics.JOURNAL_COMMIT_SECONDS.observe(time.perf_counter() - started)
        for result in results:
            metrics.EVENTS.labels("accepted").inc(result.accepted)
            metrics.EVENTS.labels("duplicate").inc(result.duplicates)
            metrics.EVENTS.labels("conflict").inc(len(result.conflicts))
        self._tail_safely()  # acknowledged events must already be visible in the live histories
        for job, result in zip(jobs, results, strict=True):
            job.loop.call_soon_threadsafe(_settle, job.future, result, None)

    def _conflicts(self, events: Sequence[EventRecord]) -> tuple[str, ...]:
        """Keys of `events` whose journalled payload differs from theirs (a retry repeats the payload)."""
        assert self._conn is not None
        stored: dict[str, tuple] = {}
        keys = list({e.event_id for e in events})
        for start in range(0, len(keys), 500):  # SQLite's limit on bound parameters
            chunk = keys[start : start + 500]
            query = f"{SELECT_PAYLOAD} ({','.join('?' * len(chunk))})"
            stored.update((row[0], row[1:]) for row in self._conn.execute(query, chunk))
        differing = {e.event_id for e in events if stored[e.event_id] != payload_of(e)}
        return tuple(sorted(differing))

    def _tail_safely(self) -> None:
        try:
            self._tail()
        except Exception as exc:  # noqa: BLE001 - a failed tail is retried at the next one; events are safe
            log.error("journal tail failed", extra={"fields": {"error": str(exc)}})

    def _tail(self) -> None:
        """Apply every committed row past applied_seq (ours and other workers') to the live histories."""
        assert self._conn is not None
        while True:
            rows = self._conn.execute(TAIL, (self.applied_seq, TAIL_CHUNK)).fetchall()
            if not rows:
                return
            self.on_rows([JournalRow(*row) for row in rows])
            self.applied_seq = rows[-1][0]
            metrics.JOURNAL_APPLIED.set(self.applied_seq)
            if len(rows) < TAIL_CHUNK:
                return

    def lag(self) -> int:
        """Events committed to the journal (by any worker) that this worker's live histories lack yet."""
        if self._reader is None:
            self._reader = connect(self.path, readonly=True)
            self._reader.execute("PRAGMA query_only=1")
        head = self._reader.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0]
        return max(0, head - self.applied_seq)


def read_events(path: str | Path) -> list[dict]:
    """Every journalled event in commit order (for the nightly import and for tests)."""
    conn = connect(path, readonly=True)
    try:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM events ORDER BY seq")]
    finally:
        conn.close()
