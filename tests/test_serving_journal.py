"""Durability of the event journal against a real server: SIGKILL in the middle of a stream of event batches,
restart, and check that every acknowledged event is there exactly once and no batch is half-written."""

from __future__ import annotations

import collections
import threading
import time

import httpx

from recsys.harness import ServerProcess
from serving.journal import read_events

BATCH = 25
SENDERS = 3


def _batch(sender: int, number: int, items: list[str]) -> dict:
    return {
        "events": [
            {
                "event_id": f"s{sender}-b{number}-e{i}",
                "user_id": f"durable-user-{sender}",
                "item_id": items[(number * BATCH + i) % len(items)],
                "timestamp": 1767225600 + number * BATCH + i,
                "event_type": "view",
            }
            for i in range(BATCH)
        ]
    }


def _sender(url: str, sender: int, items: list[str], acked: dict, sent: dict, stop: threading.Event) -> None:
    with httpx.Client(base_url=url, timeout=10) as client:
        number = 0
        while not stop.is_set():
            sent[(sender, number)] = True
            try:
                response = client.post("/v1/events", json=_batch(sender, number, items))
            except httpx.HTTPError:
                return  # the server is gone: this batch was not acknowledged
            if response.status_code == 200:
                acked[(sender, number)] = response.json()
            number += 1


def _by_batch(rows: list[dict]) -> collections.Counter:
    return collections.Counter(tuple(row["event_id"].split("-")[:2]) for row in rows)


def test_sigkill_mid_stream_loses_no_acknowledged_event_and_half_writes_none(tiny_bundle, tmp_path):
    root, bundle_dir = tiny_bundle
    from recsys.bundle.reader import BundleRecommender

    items = BundleRecommender(bundle_dir).vocab.item_ids
    journal = tmp_path / "events.sqlite3"
    server = ServerProcess(root, tmp_path / "first", journal=journal).start()
    acked: dict = {}
    sent: dict = {}
    stop = threading.Event()
    threads = [
        threading.Thread(target=_sender, args=(server.url, s, items, acked, sent, stop), daemon=True)
        for s in range(SENDERS)
    ]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    while len(acked) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    server.kill()  # SIGKILL while the senders still have batches in flight
    stop.set()
    for thread in threads:
        thread.join(timeout=15)
    assert len(acked) >= 40, server.log()[-2000:]

    # Restart on the same journal: SQLite recovers the WAL; the service replays it into live histories.
    with ServerProcess(root, tmp_path / "second", journal=journal) as restarted:
        rows = read_events(journal)
        ids = collections.Counter(row["event_id"] for row in rows)
        assert max(ids.values()) == 1, "an event is stored twice"
        for sender, number in acked:
            batch_ids = {e["event_id"] for e in _batch(sender, number, items)["events"]}
            assert batch_ids <= set(ids), f"acknowledged batch {(sender, number)} is missing events"
        counts = _by_batch(rows)
        assert set(counts.values()) == {BATCH}, "a batch is half-written"
        in_flight = [key for key in sent if key not in acked]
        assert in_flight, "the kill should have caught batches in flight"

        # Retrying everything (what a client does after a timeout) stores nothing twice.
        with httpx.Client(base_url=restarted.url, timeout=10) as client:
            duplicates = accepted = 0
            for sender, number in sorted(sent):
                body = client.post("/v1/events", json=_batch(sender, number, items)).json()
                duplicates += body["duplicates"]
                accepted += body["accepted"]
            assert duplicates == len(rows)
            assert accepted == BATCH * len(sent) - len(rows)
            # Events journalled before the crash are live again after the restart.
            user = client.get("/v1/users/durable-user-0/recommendations").json()
            assert user["fallback"] is False and user["history_length"] > 0
        final = collections.Counter(row["event_id"] for row in read_events(journal))
        assert len(final) == BATCH * len(sent) and max(final.values()) == 1
    assert restarted.torch_imported() is False


def test_graceful_stop_commits_and_restart_replays_live_history(tiny_bundle, tmp_path):
    root, bundle_dir = tiny_bundle
    from recsys.bundle.reader import BundleRecommender

    items = BundleRecommender(bundle_dir).vocab.item_ids
    journal = tmp_path / "events.sqlite3"
    events = [
        {"event_id": f"replay-{i}", "user_id": "replay-user", "item_id": items[i], "timestamp": 1767225600 + i}
        for i in range(5)
    ]
    with ServerProcess(root, tmp_path / "a", journal=journal) as server:
        response = httpx.post(server.url + "/v1/events", json={"events": events}, timeout=10)
        assert response.json()["accepted"] == 5
    # The second server scores on the event loop (engine_thread off): both modes serve the same answers.
    with ServerProcess(root, tmp_path / "b", journal=journal, env={"RECSYS_ENGINE_THREAD": "false"}) as server:
        body = httpx.get(server.url + "/v1/users/replay-user/recommendations", timeout=10).json()
        assert body["fallback"] is False and body["history_length"] == 5
        assert not {i["item_id"] for i in body["items"]} & set(items[:5])
    assert [row["event_id"] for row in read_events(journal)] == [e["event_id"] for e in events]
