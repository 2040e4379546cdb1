"""The item index at catalogue scale: exact against approximate search, recall against latency and build cost.

Protocol. Item vectors: a trained model's item embeddings (`model_dir`), extended to `n_items` with copies of
random real rows plus Gaussian noise of `noise` × the rows' mean per-dimension standard deviation (no trained
model has a million items). User vectors: that model's own user vectors for the test histories of its dataset
(`dataset_dir`), what the service would search with. Without a model, a synthetic world stands in (clustered
item vectors whose norms vary, users aimed at clusters, both stated in the result). Each index setting is
searched the way the bundle reader searches it: one query at a time (batch 1), FAISS on one thread, `fetch`
rows (the reader asks for k + the user's seen items: 10 + up to max_len 50 = 60), candidates re-scored exactly.
Recall@k = the share of the exact top-k (flat search) found in the first k of those rows. Latency is wall clock
and, beside it, the searching thread's CPU time (on a shared machine the wall-clock tail is mostly waiting for a
core). Build time is on one thread too, wall and CPU; index bytes are the serialized FAISS index (the bundle's
items.faiss); load_s is what a reader spends turning those bytes back into a searchable index.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from recsys.index import FLAT, IndexParams, ItemIndex
from recsys.runinfo import hardware, now_iso

# what a measurement tries by default: IVF with its default cells (4096 at 1M items) at four probe depths; pass
# HNSW settings to compare (its build at 1M items takes ~3 min of CPU, against ~40 s for IVF)
DEFAULT_SETTINGS = tuple(IndexParams(kind="ivf", ivf_nprobe=nprobe) for nprobe in (64, 128, 192, 256))
SEARCH_FIELDS = ("hnsw_ef_search", "ivf_nprobe")  # what can change without building again


def measure(
    n_items: int,
    dim: int,
    n_queries: int,
    settings: Sequence[IndexParams] = DEFAULT_SETTINGS,
    k: int = 10,
    fetch: int = 60,
    noise: float = 0.5,
    model_dir: str | Path | None = None,
    dataset_dir: str | Path | None = None,
    flat_baseline: bool = True,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Recall@k against exact search, search p50/p99 at batch 1 on one thread, build time and index bytes for
    each setting (and exact search itself with `flat_baseline`) on `n_items` items of `dim` dimensions."""
    if fetch < k:
        raise ValueError(f"fetch={fetch} must be at least k={k}: the reader's first k rows are what is scored")
    items, users, world = _world(n_items, dim, n_queries, noise, model_dir, dataset_dir, seed)
    log(f"world: {world['description']}")
    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        ids = [str(i) for i in range(len(items))]
        flat = ItemIndex.build(items, ids, FLAT)
        exact = flat.index.search(users, k)[1]  # one batched BLAS pass: the ground truth, not timed
        results = []
        if flat_baseline:
            results.append(_measure_one(flat, users, exact, k, fetch, build=None, log=log))
        del flat
        built: dict[tuple, tuple[ItemIndex, tuple[float, float]]] = {}
        for params in settings:
            key = tuple(sorted((name, value) for name, value in asdict(params).items() if name not in SEARCH_FIELDS))
            if key not in built:
                built.clear()  # one large index in memory at a time
                cpu_started, started = time.process_time(), time.perf_counter()
                index = ItemIndex.build(items, ids, params)
                built[key] = (index, (time.perf_counter() - started, time.process_time() - cpu_started))
                log(f"built {index.params.manifest_entry()} in {built[key][1][0]:.1f} s")
            index, build = built[key]
            searched = ItemIndex(
                index.index, ids, replace(index.params, **{f: getattr(params, f) for f in SEARCH_FIELDS})
            )
            results.append(_measure_one(searched, users, exact, k, fetch, build, log))
    finally:
        faiss.omp_set_num_threads(threads)
    return {
        "benchmark": "index-scale",
        "created_at": now_iso(),
        "hardware": hardware(),
        "protocol": {
            "n_items": len(items),
            "dim": int(items.shape[1]),
            "n_queries": len(users),
            "k": k,
            "fetch": fetch,
            "batch": 1,
            "faiss_threads": 1,
            "seed": seed,
        },
        "world": world,
        "results": results,
    }


def _measure_one(
    index: ItemIndex,
    users: np.ndarray,
    exact: np.ndarray,
    k: int,
    fetch: int,
    build: tuple[float, float] | None,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """`build`: (wall, CPU) seconds the build took, None for the baseline that is not timed."""
    for user in users[: min(20, len(users))]:  # warm the caches and the allocator before timing
        index.search(user[None], fetch)
    latencies = np.empty(len(users))
    cpu_times = np.empty(len(users))  # this thread's CPU time: the latency less the waits for a busy machine
    found = np.empty((len(users), k), dtype=np.int64)
    for q in range(len(users)):
        cpu_started, started = time.thread_time(), time.perf_counter()
        rows, _ = index.search(users[q : q + 1], fetch)
        latencies[q] = time.perf_counter() - started
        cpu_times[q] = time.thread_time() - cpu_started
        found[q] = rows[0, :k]
    recall = sum(len(np.intersect1d(a, b)) for a, b in zip(found, exact, strict=True)) / exact.size
    started = time.perf_counter()
    serialized = faiss.serialize_index(index.index)
    reloaded = ItemIndex(faiss.deserialize_index(serialized), index.item_ids, index.params)  # what a reader does
    load_s = time.perf_counter() - started
    del reloaded
    result = {
        "index": index.params.manifest_entry(),
        f"recall@{k}": round(float(recall), 4),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1e3, 3),
        "p95_ms": round(float(np.percentile(latencies, 95)) * 1e3, 3),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1e3, 3),
        "mean_ms": round(float(latencies.mean()) * 1e3, 3),
        "cpu_p50_ms": round(float(np.percentile(cpu_times, 50)) * 1e3, 3),
        "cpu_p99_ms": round(float(np.percentile(cpu_times, 99)) * 1e3, 3),
        "build_s": None if build is None else round(build[0], 1),
        "build_cpu_s": None if build is None else round(build[1], 1),
        "load_s": round(load_s, 2),
        "index_bytes": int(serialized.nbytes),
        # approximate kinds keep the embeddings beside the index to re-score candidates; a flat index is them
        "embeddings_bytes": int(index.embeddings().nbytes) if index.params.approximate else 0,
        # a busy machine shows in the tail first: the 1-minute load average after the timed queries
        "load_average": round(os.getloadavg()[0], 2),
    }
    log(
        f"{result['index']}: recall@{k} {result[f'recall@{k}']:.4f}, p50 {result['p50_ms']:.3f} ms, "
        f"p99 {result['p99_ms']:.3f} ms (load {result['load_average']}; CPU time p99 {result['cpu_p99_ms']:.3f} ms), "
        f"build {result['build_s']} s, "
        f"{result['index_bytes'] / 2**20:.0f} MiB"
    )
    return result


def _world(
    n_items: int,
    dim: int,
    n_queries: int,
    noise: float,
    model_dir: str | Path | None,
    dataset_dir: str | Path | None,
    seed: int,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Item and user vectors: a trained model's, extended to n_items, or the synthetic world."""
    rng = np.random.default_rng(seed)
    if model_dir is None:
        return _synthetic_world(n_items, dim, n_queries, rng)
    if dataset_dir is None:
        raise ValueError("a model_dir needs its dataset_dir: the user vectors come from its test histories")
    from recsys.data.prepared import load_prepared
    from training import pipeline

    model = pipeline.load_model(model_dir)
    if not hasattr(model, "user_vectors") or not hasattr(model, "item_vectors"):
        raise ValueError(f"{model_dir} holds a {type(model).__name__}: it has no user and item vectors to search")
    real = np.ascontiguousarray(model.item_vectors(), dtype=np.float32)
    if real.shape[1] != dim:
        raise ValueError(f"dim={dim} but the model at {model_dir} has {real.shape[1]}-dimensional item vectors")
    histories = pipeline.split(load_prepared(dataset_dir), model.max_len).test.inputs
    chosen = rng.choice(len(histories), size=min(n_queries, len(histories)), replace=False)
    users = np.ascontiguousarray(model.user_vectors([histories[i] for i in chosen]), dtype=np.float32)
    sigma = noise * float(real.std(axis=0).mean())
    if n_items <= len(real):
        items = real[np.sort(rng.choice(len(real), size=n_items, replace=False))]
    else:
        copies = rng.integers(0, len(real), size=n_items - len(real))
        perturbed = real[copies] + rng.normal(0.0, sigma, size=(len(copies), dim)).astype(np.float32)
        items = np.concatenate([real, perturbed])
    norms = np.linalg.norm(items, axis=1)
    world = {
        "source": "model",
        "model_dir": str(model_dir),
        "dataset_dir": str(dataset_dir),
        "real_items": len(real),
        "noise_sigma": round(sigma, 5),
        "item_norm_p1_p50_p99": np.round(np.percentile(norms, [1, 50, 99]), 3).tolist(),
        "user_norm_p50": round(float(np.median(np.linalg.norm(users, axis=1))), 3),
        "description": (
            f"{len(real)} item vectors of the model at {model_dir}, extended to {n_items} with noisy copies "
            f"(sigma {sigma:.4f} = {noise} x mean per-dim std); {len(users)} of its user vectors for test histories"
        ),
    }
    return np.ascontiguousarray(items, dtype=np.float32), users, world


def _synthetic_world(
    n_items: int, dim: int, n_queries: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Items around 1000 topic centres with log-normal norms (popular items score higher whatever the user);
    users are long vectors aimed at a mix of two topics, as a trained LM's user vectors are."""
    centres = rng.normal(size=(1000, dim)).astype(np.float32) / np.sqrt(dim)
    topic = rng.integers(0, len(centres), size=n_items)
    directions = centres[topic] + 0.5 * rng.normal(size=(n_items, dim)).astype(np.float32) / np.sqrt(dim)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    items = directions * rng.lognormal(mean=-0.6, sigma=0.3, size=(n_items, 1)).astype(np.float32)
    pairs = rng.integers(0, len(centres), size=(n_queries, 2))
    users = centres[pairs[:, 0]] + centres[pairs[:, 1]] + 0.3 * rng.normal(size=(n_queries, dim)) / np.sqrt(dim)
    users = 24.0 * users / np.linalg.norm(users, axis=1, keepdims=True)
    world = {
        "source": "synthetic",
        "description": f"synthetic: {n_items} items around 1000 topics (log-normal norms), {n_queries} users "
        "of norm 24 aimed at two topics each",
    }
    return np.ascontiguousarray(items, dtype=np.float32), np.ascontiguousarray(users, dtype=np.float32), world
