"""The shared event store on Redis: every replica writes acknowledged events to it and reads each user's live
history from it, so an event posted to one replica changes every replica's next answer for that user.

Why Redis rather than PostgreSQL: the hot path is one user's recent items per recommendation request and one
idempotent append per event batch. Redis answers the read with one LRANGE and the write with one Lua script,
which Redis runs atomically (the idempotency check, the sequence number, the stream entry and the user's list
change together or not at all), in about 0.1 ms on loopback, with no schema, no migrations and no connection
per worker to budget. PostgreSQL would give the same guarantees with a committed transaction (and the nightly
could read it with SQL), at a few times the latency per request and an operator's schema to keep.

Durability: acknowledged means durable. Redis with `appendonly yes` and `appendfsync always` writes and fsyncs the
append-only file before it replies; anything weaker (everysec, no AOF) could lose acknowledged events when
Redis crashes, so the service refuses to store events in such a Redis and says which setting to change.

The layout of the keys (shared with the nightly reader) is in recsys/data/event_logs.py.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from recsys.bundle.reader import BundleRecommender
from recsys.data.event_logs import (
    EVENT_KEY,
    SEQ_KEY,
    STORE_ID_KEY,
    STREAM_KEY,
    USER_KEY,
    payload_json,
    public_location,
)
from recsys.settings import Settings
from serving import metrics
from serving.event_store import StoreHealth
from serving.journal import AppendResult, EventRecord, JournalError
from serving.live import cutoff_for

log = logging.getLogger("recsys.store")

# A read that has not answered by then is abandoned: the request answers from the bundle alone (flagged).
READ_TIMEOUT_S = 0.25
# A write waits longer (an fsync under load); past it the client gets 503 and retries with the same event_ids,
# which the store counts as duplicates if the first attempt did land.
WRITE_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 1.0

# ARGV: received_at, batch_id, per_user, ttl_s, new store id, then (event_id, payload, user_id, item_id) per event.
# Two passes: first every key is checked (a key seen before with another payload is a conflict, and then nothing
# of the batch is stored, as in the embedded journal); then the new events are numbered and written.
APPEND_SCRIPT = f"""
local received_at, batch_id = ARGV[1], ARGV[2]
local per_user, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local seen, fresh, conflicts, duplicates = {{}}, {{}}, {{}}, 0
for base = 6, #ARGV, 4 do
  local event_id, payload = ARGV[base], ARGV[base + 1]
  local stored = seen[event_id] or redis.call('GET', '{EVENT_KEY}' .. event_id)
  if stored then
    if stored == payload then duplicates = duplicates + 1 else table.insert(conflicts, event_id) end
  else
    seen[event_id] = payload
    table.insert(fresh, base)
  end
end
if #conflicts > 0 then return {{0, duplicates, conflicts}} end
if #fresh > 0 then redis.call('SET', '{STORE_ID_KEY}', ARGV[5], 'NX') end
for _, base in ipairs(fresh) do
  local event_id, payload, user_id, item_id = ARGV[base], ARGV[base + 1], ARGV[base + 2], ARGV[base + 3]
  local seq = redis.call('INCR', '{SEQ_KEY}')
  redis.call('SET', '{EVENT_KEY}' .. event_id, payload, 'EX', ttl)
  redis.call('XADD', '{STREAM_KEY}', seq .. '-0', 'e', event_id, 'p', payload, 'r', received_at, 'b', batch_id)
  local user_key = '{USER_KEY}' .. user_id
  redis.call('RPUSH', user_key, seq .. '|' .. received_at .. '|' .. item_id)
  redis.call('LTRIM', user_key, -per_user, -1)
  redis.call('EXPIRE', user_key, ttl)
end
return {{#fresh, duplicates, conflicts}}
"""


class StoreMisconfigured(RuntimeError):
    """The Redis would acknowledge writes it could lose."""


def _client(url: str, timeout_s: float) -> aioredis.Redis:
    # One retry without delay: a pooled connection that died with a Redis restart is replaced once; a Redis that
    # is down fails fast (the caller degrades or answers 503), it does not stall the request.
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=min(timeout_s, CONNECT_TIMEOUT_S),
        retry=Retry(NoBackoff(), 1),
    )


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisStore:
    kind = "redis"

    def __init__(self, settings: Settings) -> None:
        assert settings.state_url is not None
        self.location = public_location(settings.state_url)
        self.per_user = settings.live_history_len
        self.ttl_s = settings.state_dedupe_s
        self.reader = _client(settings.state_url, READ_TIMEOUT_S)
        self.writer = _client(settings.state_url, WRITE_TIMEOUT_S)
        self.store_id: str | None = None
        self._append = self.writer.register_script(APPEND_SCRIPT)
        self._new_id = uuid.uuid4().hex  # becomes the store's identity if this replica writes its first event
        self._checked = False

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def open(self, engine: BundleRecommender | None) -> None:
        try:
            await self._check_durability()
        except (RedisError, OSError) as exc:  # down at startup: serve from bundles, retry at the first write
            fields = {"store": self.location, "error": str(exc)}
            log.error("event store unreachable at startup", extra={"fields": fields})

    async def close(self) -> None:
        await self.reader.aclose()
        await self.writer.aclose()

    async def _check_durability(self) -> None:
        config = {name: _text(value) for name, value in (await self.writer.config_get("append*")).items()}
        appendonly, appendfsync = config.get("appendonly"), config.get("appendfsync")
        if appendonly != "yes" or appendfsync != "always":
            raise StoreMisconfigured(
                f"RECSYS_STATE_URL: the Redis at {self.location} runs with appendonly={appendonly} "
                f"appendfsync={appendfsync}; acknowledged events could be lost in a crash. Start it with "
                "--appendonly yes --appendfsync always"
            )
        self._checked = True

    # -- writes ---------------------------------------------------------------------------------------------
    async def append(self, events: Sequence[EventRecord], batch_id: str) -> AppendResult:
        started = time.perf_counter()
        # a batch may carry a user's events out of order; the live history keeps them in event time
        ordered = sorted(events, key=lambda e: e.timestamp)
        args: list[str | int | float] = [repr(time.time()), batch_id, self.per_user, self.ttl_s, self._new_id]
        for e in ordered:
            args += [e.event_id, payload_json(e.user_id, e.item_id, e.timestamp, e.event_type, e.value)]
            args += [e.user_id, e.item_id]
        try:
            if not self._checked:
                await self._check_durability()
            accepted, duplicates, conflicts = await self._append(keys=[], args=args)
        except StoreMisconfigured as exc:
            raise JournalError(str(exc)) from None
        except (RedisError, OSError) as exc:
            log.error("event store write failed", extra={"fields": {"store": self.location, "error": str(exc)}})
            raise JournalError(
                "the shared event store could not confirm the batch; it was not acknowledged: retry it with the "
                "same event_ids"
            ) from None
        result = AppendResult(int(accepted), int(duplicates), tuple(sorted(c.decode() for c in conflicts)))
        metrics.JOURNAL_COMMIT_SECONDS.observe(time.perf_counter() - started)
        metrics.EVENTS.labels("accepted").inc(result.accepted)
        metrics.EVENTS.labels("duplicate").inc(result.duplicates)
        metrics.EVENTS.labels("conflict").inc(len(result.conflicts))
        return result

    # -- reads ----------------------------------------------------------------------------------------------
    async def live_items(self, user_id: str, engine: BundleRecommender) -> list[str] | None:
        try:
            async with self.reader.pipeline(transaction=False) as pipe:
                pipe.get(STORE_ID_KEY)
                pipe.lrange(USER_KEY + user_id, 0, -1)
                store_id, entries = await pipe.execute()
        except (TimeoutError, RedisError, OSError) as exc:
            metrics.LIVE_READ_FAILURES.inc()
            log.warning("event store read failed", extra={"fields": {"store": self.location, "error": str(exc)}})
            return None
        self.store_id = store_id.decode() if store_id is not None else None
        cutoff = cutoff_for(engine, self.location, self.store_id)
        items = []
        for entry in entries:
            seq, received_at, item_id = entry.decode().split("|", 2)
            if cutoff.keeps(int(seq), float(received_at)):
                items.append(item_id)
        return items

    def on_swap(self, engine: BundleRecommender) -> None:
        """Nothing to prune here: each read filters by the serving bundle's watermark, and Redis expires lists."""

    async def health(self) -> StoreHealth:
        try:
            await self.reader.ping()
        except (TimeoutError, RedisError, OSError) as exc:
            return StoreHealth(self.kind, reachable=False, detail=f"{self.location}: {type(exc).__name__}")
        return StoreHealth(self.kind, reachable=True)

    def lag(self) -> int:
        return 0  # reads go to the store itself

    @property
    def live_users(self) -> int:
        return 0  # none are held in this worker
