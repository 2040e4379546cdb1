"""Live histories: per user, the events the bundle lacks, fed by the embedded journal's tail.

The journal's writer thread writes; request handlers on the event loop read. Each user's entries are an
immutable tuple replaced in one dict assignment, so a reader never sees a half-updated history and needs
no lock; the lock only orders writers. Reads filter by the serving bundle's watermark (nothing is dropped at a
swap, so a rollback shows its live events again). Bounded: past `max_users` the
least recently active user is forgotten (the journal keeps the events; the next bundle has them).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from serving import metrics

if TYPE_CHECKING:  # the journal imports LiveCutoff from here
    from serving.journal import JournalRow


@dataclass(frozen=True)
class LiveCutoff:
    """Which stored events a bundle lacks. A nightly bundle records the seq it ingested up to (its watermark):
    everything after it is live, including events that arrived between its ingest and its promotion. A bundle
    without a watermark for this store (built by hand, or from another store) falls back to its creation time."""

    seq: int | None
    received_ts: float

    def keeps(self, seq: int, received_at: float) -> bool:
        return seq > self.seq if self.seq is not None else received_at >= self.received_ts


def cutoff_for(engine: Any, location: str, store_id: str | None) -> LiveCutoff:
    """The cutoff of the bundle serving now (None: no bundle yet, every stored event is live)."""
    if engine is None:
        return LiveCutoff(None, 0.0)
    mark = engine.events_watermark or {}
    if store_id and mark.get("location") == location and mark.get("store_id") == store_id:
        return LiveCutoff(int(mark["seq"]), engine.created_ts)
    return LiveCutoff(None, engine.created_ts)


class LiveHistory:
    def __init__(self, per_user: int = 200, max_users: int = 1_000_000) -> None:
        self.per_user = per_user
        self.max_users = max_users
        # user -> ((seq, received_at, item_id), ...), least recently active first
        self._users: OrderedDict[str, tuple[tuple[int, float, str], ...]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._users)

    def apply(self, rows: Iterable[JournalRow]) -> None:
        """Append committed events; within one chunk a user's events are ordered by their own timestamp, as
        the nightly run orders them (batches may carry them out of order)."""
        grouped: dict[str, list[JournalRow]] = defaultdict(list)
        for row in rows:
            grouped[row.user_id].append(row)
        with self._lock:
            for user_id, new in grouped.items():
                new.sort(key=lambda r: (r.timestamp, r.seq))
                entries = self._users.get(user_id, ()) + tuple((r.seq, r.received_at, r.item_id) for r in new)
                self._users[user_id] = entries[-self.per_user :]
                self._users.move_to_end(user_id)  # the end is the most recently active
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)
            metrics.LIVE_USERS.set(len(self._users))

    def items(self, user_id: str, cutoff: LiveCutoff) -> list[str]:
        """The user's live item IDs the bundle lacks, oldest first."""
        entries = self._users.get(user_id)
        if not entries:
            return []
        return [item for seq, received_at, item in entries if cutoff.keeps(seq, received_at)]
