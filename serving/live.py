"""Live histories: per user, the events received since the bundle was built, fed by the journal's tail.

The journal's writer thread writes; request handlers on the event loop read. Each user's entries are an
immutable tuple replaced in one dict assignment, so a reader never sees a half-updated history and needs
no lock; the lock only orders writers (the tail and a prune after a reload). Bounded: past `max_users` the
least recently active user is forgotten (the journal keeps the events; the next bundle has them).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, defaultdict
from collections.abc import Iterable

from serving import metrics
from serving.journal import JournalRow


class LiveHistory:
    def __init__(self, per_user: int = 200, max_users: int = 1_000_000) -> None:
        self.per_user = per_user
        self.max_users = max_users
        # user -> ((received_at, item_id), ...), least recently active first
        self._users: OrderedDict[str, tuple[tuple[float, str], ...]] = OrderedDict()
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
                entries = self._users.get(user_id, ()) + tuple((r.received_at, r.item_id) for r in new)
                self._users[user_id] = entries[-self.per_user :]
                self._users.move_to_end(user_id)  # the end is the most recently active
            while len(self._users) > self.max_users:
                self._users.popitem(last=False)
            metrics.LIVE_USERS.set(len(self._users))

    def items(self, user_id: str, since: float) -> list[str]:
        """The user's live item IDs received at or after `since` (the bundle's creation), oldest first."""
        entries = self._users.get(user_id)
        if not entries:
            return []
        if entries[0][0] >= since:
            return [item for _, item in entries]
        return [item for received_at, item in entries if received_at >= since]

    def prune(self, before: float) -> None:
        """Forget entries older than `before` (after a new bundle, whose history already holds them)."""
        with self._lock:
            for user_id in list(self._users):
                kept = tuple(e for e in self._users[user_id] if e[0] >= before)
                if kept:
                    self._users[user_id] = kept
                else:
                    del self._users[user_id]
            metrics.LIVE_USERS.set(len(self._users))
