"""Several replicas on one shared event store: real `recsys serve` processes on a real `redis-server`.

Each test starts its own Redis on a temporary directory and port (with the durability settings the README gives
operators) and its own service processes; the faults are real signals (SIGKILL of a replica, of Redis itself).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from itertools import count

import httpx
import pytest
import redis

from recsys.data import lake
from recsys.data.event_logs import STREAM_KEY, EventLogLost, RedisEventLog
from recsys.harness import RedisServer, ServerProcess
from recsys.settings import REPO_ROOT, Settings

JSON = {"content-type": "application/json"}

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None and not os.environ.get("CI"),
    reason="redis-server is not installed (make test installs it)",
)


@pytest.fixture
def store(tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def known(tiny_bundle):
    from recsys.bundle.reader import BundleRecommender

    engine = BundleRecommender(tiny_bundle[1])
    user = min(engine.histories, key=lambda u: len(engine.histories[u]))
    return {"user": user, "items": engine.vocab.item_ids, "root": tiny_bundle[0]}


def replica(known, store: RedisServer, work, **env: str) -> ServerProcess:
    return ServerProcess(known["root"], work, env={"RECSYS_STATE_URL": store.url, **env}).start()


def stored_event_ids(store: RedisServer) -> Counter:
    """How many times each event_id is in the store's stream (what the nightly reads)."""
    client = redis.Redis.from_url(store.url)
    try:
        return Counter(fields[b"e"].decode() for _, fields in client.xrange(STREAM_KEY))
    finally:
        client.close()


def events(user: str, items: list[str], ids: list[str]) -> dict:
    return {
        "events": [
            {"event_id": e, "user_id": user, "item_id": i, "timestamp": 1_800_000_000 + n}
            for n, (e, i) in enumerate(zip(ids, items, strict=True))
        ]
    }


def test_an_event_acknowledged_by_one_replica_changes_the_others_next_answer(known, store, tmp_path):
    a, b = replica(known, store, tmp_path / "a"), replica(known, store, tmp_path / "b")
    try:
        with httpx.Client(timeout=10) as client:
            url = f"{b.url}/v1/users/{known['user']}/recommendations?k=5"
            before = client.get(url).json()
            shown = [item["item_id"] for item in before["items"][:3]]
            posted = client.post(f"{a.url}/v1/events", json=events(known["user"], shown, ["x1", "x2", "x3"]))
            assert posted.status_code == 200 and posted.json()["accepted"] == 3, posted.text
            acked = time.perf_counter()
            after = client.get(url)
            seen_by_b = time.perf_counter() - acked
            # B's very next answer already counts them: the items A was told about are now seen, so excluded
            assert after.status_code == 200 and after.json()["live_events_unavailable"] is False
            assert not set(shown) & {item["item_id"] for item in after.json()["items"]}
            assert seen_by_b < 0.1, seen_by_b  # within 100 ms of the acknowledgement: B's next request itself

            # the same event_id sent to A and then to B is stored once; another payload under it is a conflict
            first = client.post(f"{a.url}/v1/events", json=events("u-dup", [known["items"][0]], ["dup-1"]))
            again = client.post(f"{b.url}/v1/events", json=events("u-dup", [known["items"][0]], ["dup-1"]))
            assert (first.json()["accepted"], again.json()["accepted"], again.json()["duplicates"]) == (1, 0, 1)
            other = client.post(f"{b.url}/v1/events", json=events("u-dup", [known["items"][1]], ["dup-1"]))
            assert other.status_code == 409 and other.json()["error"]["code"] == "event_id_conflict"
        assert stored_event_ids(store)["dup-1"] == 1
    finally:
        for server in (a, b):
            assert server.stop() == 0, server.log()[-2000:]
            assert server.torch_imported() is False


class Poster:
    """A client that posts batches of new events until stopped, retrying a refused batch with the same event_ids
    (what the API tells a client to do) and recording what was acknowledged and every status it saw."""

    def __init__(self, urls: list[str], user: str, items: list[str], prefix: str) -> None:
        self.urls, self.user, self.items, self.prefix = urls, user, items, prefix
        self.acked: list[str] = []
        self.statuses: Counter = Counter()
        self.acked_after: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        numbers = count()
        with httpx.Client(timeout=5) as client:
            attempts = count()
            while True:
                ids = [f"{self.prefix}-{next(numbers)}" for _ in range(5)]
                body = events(self.user, [self.items[len(self.acked) % len(self.items)]] * 5, ids)
                while True:  # the same batch until it is acknowledged
                    # round robin, as a load balancer would: a retry goes to the next replica
                    url = self.urls[next(attempts) % len(self.urls)]
                    try:
                        response = client.post(f"{url}/v1/events", json=body)
                        self.statuses[response.status_code] += 1
                        if response.status_code == 200:
                            self.acked += ids
                            self.acked_after[ids[0]] = time.monotonic()
                            break
                    except httpx.HTTPError:
                        self.statuses["connection"] += 1
                    if self._stop.is_set():
                        return
                    time.sleep(0.02)
                if self._stop.is_set():
                    return

    def start(self) -> Poster:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


def test_sigkill_of_a_replica_mid_stream_loses_no_acknowledged_event(known, store, tmp_path):
    a, b = replica(known, store, tmp_path / "a"), replica(known, store, tmp_path / "b")
    poster = Poster([a.url], "u-kill", known["items"], "k").start()
    time.sleep(1.0)
    a.kill()  # mid-stream: requests in flight on A get no answer
    poster.urls = [b.url]  # the load balancer notices and sends the rest to B
    time.sleep(1.0)
    poster.stop()
    try:
        stored = stored_event_ids(store)
        assert len(poster.acked) >= 20, poster.statuses
        assert all(stored[e] == 1 for e in poster.acked)  # every acknowledged event, exactly once
        assert max(stored.values()) == 1  # and nothing twice, acknowledged or not
    finally:
        assert b.stop() == 0, b.log()[-2000:]


def test_sigkill_of_the_store_loses_no_acknowledged_event_and_replicas_recover(known, store, tmp_path):
    a, b = replica(known, store, tmp_path / "a"), replica(known, store, tmp_path / "b")
    poster = Poster([a.url, b.url], "u-store", known["items"], "s").start()
    try:
        time.sleep(1.0)
        store.kill()  # Redis itself, mid-stream: what it acknowledged is in its fsync'd append-only file
        killed_at, acked_before = time.monotonic(), len(poster.acked)
        time.sleep(1.0)
        assert len(poster.acked) <= acked_before + 5  # at most the batch that raced the kill
        store.start()  # same directory and port: it replays its append-only file
        deadline = time.monotonic() + 15
        while len(poster.acked) < acked_before + 25 and time.monotonic() < deadline:
            time.sleep(0.1)
        poster.stop()
        # the client was told to retry (503), never that a batch was stored when it was not; no 500s
        assert poster.statuses[503] >= 1 and set(poster.statuses) <= {200, 503}, poster.statuses
        assert any(t > killed_at + 1.0 for t in poster.acked_after.values()), "no acknowledgements after restart"
        stored = stored_event_ids(store)
        assert all(stored[e] == 1 for e in poster.acked)
        assert max(stored.values()) == 1
        assert a.process.poll() is None and b.process.poll() is None  # neither replica was restarted
    finally:
        poster.stop()
        for server in (a, b):
            assert server.stop() == 0, server.log()[-2000:]


def test_an_unreachable_store_degrades_reads_and_refuses_events(known, store, tmp_path):
    a = replica(known, store, tmp_path / "a")
    try:
        with httpx.Client(base_url=a.url, timeout=10) as client:
            assert client.get("/readyz").json()["status"] == "ready"
            store.stop()
            ready = client.get("/readyz")
            assert ready.status_code == 200  # reads still work: a load balancer keeps this replica
            assert ready.json()["status"] == "degraded" and ready.json()["event_store_reachable"] is False
            answer = client.get(f"/v1/users/{known['user']}/recommendations?k=3")
            assert answer.status_code == 200 and len(answer.json()["items"]) == 3
            assert answer.json()["live_events_unavailable"] is True  # from the bundle alone, and it says so
            refused = client.post("/v1/events", json=events("u-down", [known["items"][0]], ["down-1"]))
            assert refused.status_code == 503 and refused.headers["retry-after"]
            assert refused.json()["error"]["code"] == "event_store_unavailable"
            assert "recsys_live_read_failures_total" in client.get("/metrics").text

            store.start()
            assert client.get("/readyz").json()["status"] == "ready"
            accepted = client.post("/v1/events", json=events("u-down", [known["items"][0]], ["down-1"]))
            assert accepted.status_code == 200 and accepted.json()["accepted"] == 1
            answer = client.get(f"/v1/users/{known['user']}/recommendations?k=3").json()
            assert answer["live_events_unavailable"] is False
    finally:
        assert a.stop() == 0, a.log()[-2000:]


def test_a_redis_that_could_lose_acknowledged_events_is_refused(known, tmp_path):
    weak = RedisServer(tmp_path / "redis", fsync="everysec").start()
    try:
        with pytest.raises(RuntimeError, match="appendfsync=everysec"):
            replica(known, weak, tmp_path / "a")
    finally:
        weak.stop()


@pytest.mark.parametrize("url", ["localhost:6379", "redis://h:port/0", "redis://h:1/zero", "http://h:1/0"])
def test_a_malformed_state_url_is_a_one_line_startup_error(url, tmp_path):
    env = {**os.environ, "RECSYS_STATE_URL": url, "RECSYS_WORK_DIR": str(tmp_path)}
    launch = "from recsys.cli import app; app(['serve'])"
    done = subprocess.run([sys.executable, "-c", launch], env=env, capture_output=True, text=True, cwd=REPO_ROOT)
    output = (done.stdout + done.stderr).strip()
    assert done.returncode != 0 and "Traceback" not in output
    assert len(output.splitlines()) == 1 and "RECSYS_STATE_URL" in output, output


def test_the_nightly_ingests_the_shared_store_exactly_once_and_detects_a_store_that_lost_data(store, tmp_path):
    settings = Settings(state_url=store.url, work_dir=tmp_path)

    async def post(ids: list[str]) -> None:
        from serving.journal import EventRecord
        from serving.shared_store import RedisStore

        writer = RedisStore(settings)
        await writer.open(None)
        records = [EventRecord(e, "u1", f"i{n}", 1_800_000_000.0 + n) for n, e in enumerate(ids)]
        assert (await writer.append(records, "batch")).accepted == len(ids)
        await writer.close()

    root = tmp_path / "lake"
    asyncio.run(post(["a", "b", "c"]))
    first = lake.ingest(root, "r1", None, store.url)
    assert (first["events"], first["journal"]["after"], first["journal"]["upto"]) == (3, 0, 3)
    assert lake.ingest(root, "r2", None, store.url)["partition"] is None  # nothing new: nothing read twice
    asyncio.run(post(["d", "e"]))
    second = lake.ingest(root, "r3", None, store.url)
    assert (second["events"], second["journal"]["after"], second["journal"]["upto"]) == (2, 3, 5)
    assert lake.lake_events(root).height == 5
    assert RedisEventLog(store.url).read(0, 5).height == 2  # what the lake holds twice over is trimmed

    client = redis.Redis.from_url(store.url)
    client.flushall()  # the store lost everything (restarted without its append-only file) ...
    asyncio.run(post(["f"]))  # ... and took new events since
    with pytest.raises(EventLogLost, match="wiped or replaced|lost data"):
        lake.ingest(root, "r4", None, store.url)
    assert lake.lake_events(root).height == 5  # nothing ingested
    client.close()


def test_live_reads_follow_the_bundles_ingest_watermark(store, tmp_path):
    """Events after the watermark are live even when they arrived before the bundle was built."""
    from serving.journal import EventRecord
    from serving.shared_store import RedisStore

    settings = Settings(state_url=store.url, work_dir=tmp_path)

    class Bundle:  # what the store reads of a bundle: its watermark and creation time
        def __init__(self, mark: dict | None) -> None:
            self.events_watermark, self.created_ts = mark, time.time() + 3600

    async def scenario() -> tuple[list[str] | None, list[str] | None]:
        shared = RedisStore(settings)
        await shared.open(None)
        await shared.append([EventRecord(f"w{n}", "u", f"i{n}", 1_800_000_000.0 + n) for n in range(4)], "b")
        await shared.live_items("u", Bundle(None))  # learns the store's identity
        mark = {"location": shared.location, "store_id": shared.store_id, "seq": 2}
        with_mark = await shared.live_items("u", Bundle(mark))
        without = await shared.live_items("u", Bundle(None))
        await shared.close()
        return with_mark, without

    with_mark, without = asyncio.run(scenario())
    assert with_mark == ["i2", "i3"]  # seq 3 and 4: after what the nightly ingested
    assert without == []  # a bundle built an hour from now, without a watermark, holds them all
