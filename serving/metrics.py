"""Prometheus metrics of the service: request counts and latency per route, bundle version and reloads,
journal backlog and lag, fallbacks served.

Defined once at import (prometheus-client registries refuse duplicates). With several uvicorn workers,
`recsys serve` sets PROMETHEUS_MULTIPROC_DIR before the workers start; the values then live in per-process
files and /metrics aggregates them (gauges say how: per process or the max).
"""

from __future__ import annotations

import contextlib
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# Sub-millisecond buckets: the engine answers in well under 1 ms, an HTTP round trip in ~1–2 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "recsys_http_requests", "HTTP requests by route template, method and status", ["route", "method", "status"]
)
LATENCY = Histogram(
    "recsys_http_request_duration_seconds",
    "Time from the request's arrival to the end of the response, by route template",
    ["route", "method"],
    buckets=LATENCY_BUCKETS,
)
BUNDLE = Gauge(
    "recsys_bundle_info", "1 for the bundle version this process serves", ["version"], multiprocess_mode="liveall"
)
RELOADS = Counter("recsys_bundle_reloads", "Bundle loads by outcome (ok, failed)", ["result"])
RELOAD_SECONDS = Histogram(
    "recsys_bundle_load_seconds",
    "Time to verify, load and smoke-test a bundle",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60),
)
FALLBACKS = Counter("recsys_fallbacks", "Popularity fallbacks served, by reason", ["reason"])
UNKNOWN_ITEMS = Counter("recsys_unknown_items", "History items the bundle does not know (ignored)")
ADCOPY = Counter("recsys_adcopy", "Ad copy served, by source (precomputed, generated, fallback)", ["source"])
ADCOPY_TIMEOUTS = Counter("recsys_adcopy_timeouts", "Live ad copy whose generation ran out of time (template served)")
EVENTS = Counter("recsys_events", "Events received, by result (accepted, duplicate, conflict)", ["result"])
LIVE_READ_FAILURES = Counter(
    "recsys_live_read_failures",
    "Requests answered from the bundle alone because the shared event store could not be read",
)
LIVE_USERS = Gauge(
    "recsys_live_users", "Users with live events held in this process's memory", multiprocess_mode="liveall"
)
JOURNAL_PENDING = Gauge(
    "recsys_journal_pending_batches", "Event batches waiting for their commit", multiprocess_mode="livesum"
)
JOURNAL_APPLIED = Gauge(
    "recsys_journal_applied_seq", "Last journal row applied to the live histories", multiprocess_mode="liveall"
)
JOURNAL_LAG = Gauge(
    "recsys_journal_lag_events",
    "Journal rows committed (by any worker) that this process's live histories lack, at scrape time",
    multiprocess_mode="liveall",
)
JOURNAL_COMMIT_SECONDS = Histogram(
    "recsys_journal_commit_seconds",
    "Time of one group commit (inserts + fsync)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
BATCH_REJECTIONS = Counter(
    "recsys_batch_rejections",
    "Batch requests refused before scoring, by reason (busy: no slot within batch_wait_s, 429; "
    "too_large: more results than max_batch_results, 422)",
    ["reason"],
)
BATCHES_IN_FLIGHT = Gauge(
    "recsys_batches_in_flight", "Batch requests holding a slot (scoring or rendering)", multiprocess_mode="livesum"
)
BATCH_SLOT_WAIT = Histogram(
    "recsys_batch_slot_wait_seconds",
    "Time a batch request waited for a slot, admitted ones only (near batch_wait_s: the limit is too tight)",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)


def render() -> tuple[bytes, str]:
    """The exposition text, aggregated over worker processes when there are several."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def set_bundle(version: str | None, previous: str | None) -> None:
    if previous is not None:
        with contextlib.suppress(KeyError):  # never set in this process
            BUNDLE.remove(previous)
    if version is not None:
        BUNDLE.labels(version).set(1)
