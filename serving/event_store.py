"""The service's event store: one interface, two homes.

- `EmbeddedStore` (the default): the SQLite journal on this machine's disk, tailed into per-worker live
  histories. Right for one box; behind a load balancer an event posted to one replica never reaches another.
- `RedisStore` (serving/shared_store.py, when RECSYS_STATE_URL is set): one Redis that every replica writes to
  and reads each user's live history from, per request.

Routers only see `EventStore`: append a batch durably, read a user's live items (None when the store cannot be
reached: the answer then comes from the bundle alone and says so), report health.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from recsys.bundle.reader import BundleRecommender
from recsys.settings import Settings
from serving.journal import AppendResult, EventRecord, Journal
from serving.live import LiveHistory, cutoff_for


@dataclass(frozen=True)
class StoreHealth:
    kind: str  # "sqlite" or "redis"
    reachable: bool
    detail: str | None = None


class EventStore(Protocol):
    kind: str

    async def open(self, engine: BundleRecommender | None) -> None:
        """At startup, after the first bundle load; an unreachable shared store is not fatal (it recovers)."""

    async def close(self) -> None:
        """At shutdown: what was queued is stored first."""

    async def append(self, events: Sequence[EventRecord], batch_id: str) -> AppendResult:
        """Durable before it returns; JournalError (→ 503, retry with the same event_ids) when it cannot be."""

    async def live_items(self, user_id: str, engine: BundleRecommender) -> list[str] | None:
        """The user's events the bundle lacks, oldest first; None when the store cannot be read now (never
        raises: a store failure degrades the answer, it does not fail it)."""

    def on_swap(self, engine: BundleRecommender) -> None:
        """A new bundle serves (runs in a worker thread): drop what its histories already hold."""

    async def health(self) -> StoreHealth: ...

    def lag(self) -> int:
        """Events stored but not yet visible to this worker (0 where reads go to the store itself)."""

    @property
    def live_users(self) -> int: ...


class EmbeddedStore:
    """The SQLite journal + this worker's live histories, fed by the journal's tail (serving/journal.py)."""

    kind = "sqlite"
    location = "sqlite"

    def __init__(self, settings: Settings) -> None:
        self.live = LiveHistory(settings.live_history_len, settings.live_max_users)
        self.journal = Journal(settings.journal_file, on_rows=self.live.apply)

    async def open(self, engine: BundleRecommender | None) -> None:
        await asyncio.to_thread(self.journal.start, lambda store_id: cutoff_for(engine, self.location, store_id))

    async def close(self) -> None:
        await asyncio.to_thread(self.journal.stop)  # commits whatever is queued before the process exits

    async def append(self, events: Sequence[EventRecord], batch_id: str) -> AppendResult:
        return await self.journal.append(events, batch_id)

    async def live_items(self, user_id: str, engine: BundleRecommender) -> list[str] | None:
        return self.live.items(user_id, cutoff_for(engine, self.location, self.journal.store_id))

    def on_swap(self, engine: BundleRecommender) -> None:
        """Nothing is dropped at a swap: reads filter by the serving bundle's watermark, so a rollback to an older
        bundle shows the events after its watermark again. Memory stays bounded by the per-user and user caps."""

    async def health(self) -> StoreHealth:
        return StoreHealth(self.kind, reachable=True)

    def lag(self) -> int:
        return self.journal.lag()

    @property
    def live_users(self) -> int:
        return len(self.live)


def open_event_store(settings: Settings) -> EventStore:
    if settings.state_url:
        from serving.shared_store import RedisStore

        return RedisStore(settings)
    return EmbeddedStore(settings)
