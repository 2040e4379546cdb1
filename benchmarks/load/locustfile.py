"""The mixed workload of `recsys benchmark serving-scale`, run by locust in its own process (never imported).

Each locust user runs one task at a fixed rate (`constant_throughput`), so users × rate per user is the total
request rate whatever the latency, as long as the service keeps up. A task is a read with probability
SCALE_BENCH_READ_SHARE (`GET /v1/users/{user}/recommendations?k=10`) and otherwise a write (`POST /v1/events`
with one new event). Requests go round robin over the replicas, as a load balancer in front of them would.

Settings, from the benchmark (serving/bench/scale.py) through the environment:
- SCALE_BENCH_BASE_URLS: the replicas' base URLs, comma-separated
- SCALE_BENCH_USERS_FILE, SCALE_BENCH_ITEMS_FILE: known user and item IDs, one per line
- SCALE_BENCH_RATE_PER_USER: tasks per second of each locust user
- SCALE_BENCH_READ_SHARE: share of the tasks that are reads
- SCALE_BENCH_ACKED_DIR: where this process writes the event_ids the service acknowledged (200), at exit
"""

from __future__ import annotations

import itertools
import os
import random
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import gevent
from locust import FastHttpUser, events, task
from locust.user.wait_time import constant_throughput


def _setting(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise RuntimeError(f"{name} is not set: run this locustfile through `recsys benchmark serving-scale`")
    return value


BASE_URLS = [url.rstrip("/") for url in _setting("SCALE_BENCH_BASE_URLS").split(",") if url]
USERS = Path(_setting("SCALE_BENCH_USERS_FILE")).read_text().splitlines()
ITEMS = Path(_setting("SCALE_BENCH_ITEMS_FILE")).read_text().splitlines()
RATE_PER_USER = float(_setting("SCALE_BENCH_RATE_PER_USER"))
READ_SHARE = float(_setting("SCALE_BENCH_READ_SHARE"))
ACKED_DIR = Path(_setting("SCALE_BENCH_ACKED_DIR"))

_next_replica = itertools.cycle(BASE_URLS)  # one gevent thread: no lock needed
acked_event_ids: list[str] = []


class MixedClient(FastHttpUser):
    host = BASE_URLS[0]  # every request names its replica in full; locust only requires a host
    wait_time = constant_throughput(RATE_PER_USER)

    def on_start(self) -> None:
        # Locust starts a second's worth of clients at the same instant, and with a fixed period they would then
        # fire in lockstep: bursts of N simultaneous requests that measure the burst's queue, not the service.
        # A random phase spreads them over the period, as independent clients are.
        gevent.sleep(random.uniform(0, 1 / RATE_PER_USER))

    @task
    def read_or_write(self) -> None:
        base = next(_next_replica)
        if random.random() < READ_SHARE:
            user = quote(random.choice(USERS), safe="")
            self.client.get(f"{base}/v1/users/{user}/recommendations?k=10", name="GET recommendations")
            return
        event_id = str(uuid.uuid4())
        event = {"event_id": event_id, "user_id": random.choice(USERS), "item_id": random.choice(ITEMS)}
        body = {"events": [{**event, "timestamp": time.time()}]}
        with self.client.post(f"{base}/v1/events", json=body, name="POST events", catch_response=True) as response:
            if response.status_code == 200:
                acked_event_ids.append(event_id)
                response.success()
            else:
                # status 0: no HTTP answer at all (connection refused, reset or timed out); say which
                reason = getattr(response, "error", None) or (response.text or "")[:200]
                response.failure(f"status {response.status_code}: {reason}")


@events.quitting.add_listener
def write_acked_event_ids(**_kwargs) -> None:
    ACKED_DIR.mkdir(parents=True, exist_ok=True)
    (ACKED_DIR / f"acked-{os.getpid()}.txt").write_text("".join(f"{e}\n" for e in acked_event_ids))
