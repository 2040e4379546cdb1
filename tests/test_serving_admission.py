"""Admission control of POST /v1/recommendations/batch against a real uvicorn server: the results cap (422),
the concurrency limit (429 with Retry-After, counted in /metrics), single-user requests not queued behind heavy
batches, and the batch body unchanged now that the route renders it on a worker thread.

The bundle is wide (2,000 items; an untrained encoder, scores do not matter here) so that k=1000 is real work.
"""

from __future__ import annotations

import json
import re
import statistics
import threading
import time

import httpx
import pytest

from recsys.harness import ServerProcess
from serving.schemas import BatchRecommendation, Recommendation, ScoredItem

N_ITEMS = 2000
MAX_RESULTS = 100_000  # RECSYS_MAX_BATCH_RESULTS of the test server: 100 queries × k=1000 fit exactly
WAIT_S = 0.05  # RECSYS_BATCH_WAIT_S: short, so that a batch finding the single slot taken is refused at once
BATCH = "/v1/recommendations/batch"


@pytest.fixture(scope="module")
def wide_bundle(tmp_path_factory):
    """A bundles root with one promoted bundle of N_ITEMS items and 200 users with random histories."""
    import numpy as np

    from recsys.data.sequences import Sequences
    from recsys.data.vocab import ItemVocab
    from training.export import export_bundle
    from training.lm.model import GenerativeRecommender, LMConfig, TrainConfig

    config = LMConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_len=50)
    model = GenerativeRecommender(config, TrainConfig(seed=0))
    model.init_model(ItemVocab([f"SKU-{i:05d}" for i in range(N_ITEMS)]))
    rng = np.random.default_rng(0)
    users = [f"U-{u:04d}" for u in range(200)]
    sequences = Sequences(users, [rng.integers(0, N_ITEMS, size=int(rng.integers(3, 60))) for _ in users])
    root = tmp_path_factory.mktemp("wide-bundles")
    export_bundle(model, sequences, root, promote=True)
    return root, model.vocab.item_ids, users


@pytest.fixture(scope="module")
def server(wide_bundle, tmp_path_factory):
    env = {
        "RECSYS_MAX_BATCH_RESULTS": str(MAX_RESULTS),
        "RECSYS_BATCH_CONCURRENCY": "1",
        "RECSYS_BATCH_WAIT_S": str(WAIT_S),
        "RECSYS_ACCESS_LOG": "false",
    }
    process = ServerProcess(wide_bundle[0], tmp_path_factory.mktemp("serve-admission"), env=env).start()
    yield process
    assert process.stop() == 0, process.log()[-3000:]
    assert "Traceback" not in process.log(), process.log()[-3000:]


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def heavy_batch(items: list[str], queries: int = 100, k: int = 1000) -> dict:
    """`queries` histories of 300 items each (the model reads the last 50), asking for k items each."""
    return {
        "queries": [{"history": [items[(q * 300 + j) % len(items)] for j in range(300)]} for q in range(queries)],
        "k": k,
    }


def rejections(client: httpx.Client, reason: str) -> float:
    text = client.get("/metrics").text
    match = re.search(rf'^recsys_batch_rejections_total{{reason="{reason}"}} (\S+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


def test_a_batch_over_the_results_cap_gets_422_with_the_figures_and_what_to_do(client, wide_bundle):
    items = wide_bundle[1]
    before = rejections(client, "too_large")
    response = client.post(BATCH, json=heavy_batch(items, queries=101))
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "batch_too_large"
    message = error["message"]
    assert "101000" in message and f"{MAX_RESULTS}" in message  # the figure and the limit
    assert "split" in message and "at most 100 queries" in message  # what to do
    assert rejections(client, "too_large") == before + 1

    at_the_limit = client.post(BATCH, json=heavy_batch(items, queries=100))
    assert at_the_limit.status_code == 200, at_the_limit.text
    results = at_the_limit.json()["results"]
    assert len(results) == 100 and {len(r["items"]) for r in results} == {1000}


def test_the_advice_fits_a_k_larger_than_the_whole_limit():
    from serving.errors import ApiError
    from serving.routers.recommendations import check_batch_size
    from serving.schemas import BatchRecommendRequest

    check_batch_size(BatchRecommendRequest(queries=[{"history": ["a"]}] * 5, k=100), max_results=500)  # fits
    with pytest.raises(ApiError) as refused:
        check_batch_size(BatchRecommendRequest(queries=[{"history": ["a"]}], k=1000), max_results=500)
    assert refused.value.status == 422 and "ask for k of at most 500" in refused.value.message


def test_batches_beyond_the_concurrency_limit_get_429_with_retry_after(client, wide_bundle):
    body = heavy_batch(wide_bundle[1])
    before = rejections(client, "busy")
    start = threading.Barrier(8)
    answers: list[httpx.Response] = []

    def send() -> None:
        with httpx.Client(base_url=client.base_url, timeout=60) as own:
            start.wait()
            answers.append(own.post(BATCH, json=body))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    statuses = sorted(a.status_code for a in answers)
    assert set(statuses) == {200, 429}, statuses  # one slot: at least one served, the rest cannot all wait in
    for refused in (a for a in answers if a.status_code == 429):
        assert refused.headers["retry-after"] == "1"  # whole seconds, at least one
        error = refused.json()["error"]
        assert error["code"] == "batch_capacity_exceeded" and error["request_id"]
        assert "retry after 1 s" in error["message"]
    assert rejections(client, "busy") == before + statuses.count(429)


def test_single_user_requests_are_not_queued_behind_heavy_batches(client, wide_bundle):
    _, items, users = wide_bundle
    body = json.dumps(heavy_batch(items)).encode()  # encoded once: the clients must not compete for the GIL

    def post_batch(c: httpx.Client) -> httpx.Response:
        return c.post(BATCH, content=body, headers={"content-type": "application/json"})

    alone = []
    for _ in range(2):
        started = time.perf_counter()
        assert post_batch(client).status_code == 200
        alone.append(time.perf_counter() - started)
    batch_seconds = min(alone)

    stop = threading.Event()
    served: list[tuple[float, float]] = []  # (start, end) of every batch answered 200
    unexpected: list[str] = []

    def hammer() -> None:
        with httpx.Client(base_url=client.base_url, timeout=60) as own:
            while not stop.is_set():
                started = time.perf_counter()
                response = post_batch(own)
                if response.status_code == 200:
                    served.append((started, time.perf_counter()))
                elif response.status_code == 429:  # a polite client: waits as told
                    stop.wait(float(response.headers["retry-after"]))
                else:
                    unexpected.append(response.text)
                    return

    clients = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in clients:
        thread.start()
    try:
        time.sleep(batch_seconds / 2)  # the first batches are in
        gets = []
        enough = time.perf_counter() + max(2.0, 3 * batch_seconds)
        give_up = time.perf_counter() + 60  # GETs stuck behind the batches take about a batch's time each
        while (time.perf_counter() < enough or len(gets) < 20) and time.perf_counter() < give_up:
            started = time.perf_counter()
            response = client.get(f"/v1/users/{users[len(gets) % len(users)]}/recommendations")
            assert response.status_code == 200
            gets.append((started, time.perf_counter()))
    finally:
        stop.set()
        for thread in clients:
            thread.join()

    assert not unexpected, unexpected
    # Count only the GETs that ran while a batch was being served: those are the ones that could have queued.
    during = [end - start for start, end in gets if any(s < start and end < e for s, e in served)]
    assert len(during) >= 5, f"too few GETs overlapped a batch ({len(during)} of {len(gets)}; {len(served)} batches)"
    # Before, a GET waited for the batch being rendered on the event loop: most of a batch's own time.
    typical = statistics.median(during)
    message = (
        f"GETs took {typical * 1000:.0f} ms (median) while batches ran; a batch alone takes "
        f"{batch_seconds * 1000:.0f} ms"
    )
    assert typical < batch_seconds / 4, message


def test_the_batch_body_is_the_models_json_byte_for_byte(client, wide_bundle):
    _, items, users = wide_bundle
    queries = [
        {"history": [items[3], items[7]], "exclude": [items[11]]},
        {"user_id": users[0]},
        {"history": ["NOPE", items[5], 12345]},
        {"history": ["ONLY-UNKNOWN"]},  # the popularity fallback
        {"user_id": "stranger", "history": [items[9]]},
    ]
    response = client.post(BATCH, json={"queries": queries, "k": 4})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    body = response.json()
    assert BatchRecommendation.model_validate(body).model_dump(mode="json") == body
    assert list(body) == list(BatchRecommendation.model_fields)
    for result in body["results"]:
        assert list(result) == list(Recommendation.model_fields)
        assert all(list(item) == list(ScoredItem.model_fields) for item in result["items"])
    assert [r["fallback"] for r in body["results"]] == [False, False, False, True, False]
    assert body["results"][2]["unknown_items"] == ["NOPE", "12345"]

    # The single-query route still answers through FastAPI's own serialisation of the model: a batch of one
    # query is that response wrapped, to the byte.
    version = json.dumps(body["bundle_version"]).encode()
    for query in queries:
        single = client.post("/v1/recommendations", json={**query, "k": 4})
        batch = client.post(BATCH, json={"queries": [query], "k": 4})
        assert batch.content == b'{"bundle_version":' + version + b',"results":[' + single.content + b"]}"


def test_rendering_writes_what_fastapi_writes_for_the_model_with_awkward_values():
    """Floats pydantic writes without an exponent, non-ASCII and escaped IDs, empty lists, both fallbacks."""
    from pydantic import TypeAdapter

    from recsys.bundle.reader import Recommendations
    from serving.routers.recommendations import render_batch, to_response

    results = [
        Recommendations(
            user_id="u-é",
            item_ids=["é", "日本", '"quoted"', "line\u2028break", "back\\slash"],
            scores=[-5.8650970458984375e-05, 1e-07, 123.0, 1e16, 0.1],
            bundle_version="v1",
            history_length=3,
            history_truncated=True,
        ),
        Recommendations(
            user_id=None,
            item_ids=["1", "2"],
            scores=[5.0, 2.0],
            bundle_version="v1",
            fallback=True,
            fallback_reason="no_known_items",
            unknown_items=["x", "ÿ"],
        ),
        Recommendations(
            user_id="nobody", item_ids=[], scores=[], bundle_version="v1", fallback=True, fallback_reason="unknown_user"
        ),
    ]
    unavailable = [False, True, False]
    model = BatchRecommendation(
        bundle_version="v1", results=[to_response(r, u) for r, u in zip(results, unavailable, strict=True)]
    )
    # FastAPI's own path for a route with a response_model: the TypeAdapter's dump_json, by alias.
    expected = TypeAdapter(BatchRecommendation).dump_json(model, by_alias=True)
    assert render_batch("v1", results, unavailable) == expected


def test_the_openapi_document_still_describes_the_batch_response(client):
    responses = client.get("/openapi.json").json()["paths"][BATCH]["post"]["responses"]
    assert responses["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/BatchRecommendation")
    assert responses["429"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
