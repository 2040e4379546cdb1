"""The online API against a real uvicorn server on 127.0.0.1: endpoints, live events, admin key, bad input.

One server for the module (starting one costs ~1.5 s); the tests that change state use their own users.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import httpx
import pytest

from recsys.harness import ServerProcess

API_KEY = "test-admin-key-0123456789"
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def server(tiny_bundle, tmp_path_factory):
    root, _ = tiny_bundle
    work = tmp_path_factory.mktemp("serve-api")
    env = {"RECSYS_API_KEY": API_KEY, "RECSYS_MAX_BODY_BYTES": "65536", "RECSYS_BODY_TIMEOUT_S": "2"}
    process = ServerProcess(root, work, env=env).start()
    yield process
    assert process.stop() == 0, process.log()[-3000:]
    assert process.torch_imported() is False, "the service imported torch"
    assert "Traceback" not in process.log(), process.log()[-3000:]


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=10) as c:
        yield c


@pytest.fixture(scope="module")
def known(tiny_bundle):
    """A user from the bundle's histories with a short history, and items the bundle knows."""
    from recsys.bundle.reader import BundleRecommender

    engine = BundleRecommender(tiny_bundle[1])
    user = min(engine.histories, key=lambda u: len(engine.histories[u]))
    return {
        "user": user,
        "history": list(engine.histories[user]),
        "items": engine.vocab.item_ids,
        "version": engine.version,
        "max_len": engine.max_len,
    }


def assert_clean_error(response: httpx.Response, status: int) -> dict:
    """A JSON error of the documented shape, without traces or server paths."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and {"code", "message", "request_id"} <= set(body["error"])
    text = response.text
    for leak in ("Traceback", "/tmp", "/work", "/home", ".py", "site-packages"):
        assert leak not in text, f"{leak!r} leaked in {text}"
    return body["error"]


# -- recommendations ---------------------------------------------------------------------------------------
def test_known_user_gets_personal_recommendations_with_the_bundle_version(client, known):
    response = client.get(f"/v1/users/{known['user']}/recommendations", params={"k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["bundle_version"] == known["version"] == response.headers["x-bundle-version"]
    assert body["fallback"] is False and body["fallback_reason"] is None
    assert len(body["items"]) == 5
    assert not set(i["item_id"] for i in body["items"]) & set(known["history"])  # exclude_seen by default
    scores = [i["score"] for i in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert body["history_length"] == len(known["history"])


def test_unknown_user_gets_flagged_popularity_fallback(client, known):
    body = client.get("/v1/users/nobody-at-all/recommendations", params={"k": 3}).json()
    assert body["fallback"] is True and body["fallback_reason"] == "unknown_user"
    assert len(body["items"]) == 3 and body["bundle_version"] == known["version"]


def test_history_with_unknown_items_ignores_and_lists_them(client, known):
    history = [known["items"][0], "NOT-AN-ITEM", 987654321, known["items"][1]]
    body = client.post("/v1/recommendations", json={"history": history, "k": 4, "exclude": [known["items"][2]]}).json()
    assert body["unknown_items"] == ["NOT-AN-ITEM", "987654321"]
    assert body["fallback"] is False and body["history_length"] == 2
    returned = {i["item_id"] for i in body["items"]}
    assert len(returned) == 4 and not returned & {known["items"][0], known["items"][1], known["items"][2]}


def test_only_unknown_items_fall_back_with_a_reason(client):
    body = client.post("/v1/recommendations", json={"history": ["X1", "X2"], "k": 2}).json()
    assert body["fallback"] is True and body["fallback_reason"] == "no_known_items"
    assert body["unknown_items"] == ["X1", "X2"]


def test_long_history_is_truncated_to_max_len_and_says_so(client, known):
    history = [known["items"][i % len(known["items"])] for i in range(known["max_len"] + 15)]
    body = client.post("/v1/recommendations", json={"history": history, "k": 3}).json()
    assert body["history_truncated"] is True and body["history_length"] == known["max_len"]


def test_batch_answers_every_query_in_order(client, known):
    queries = [
        {"history": [known["items"][3]]},
        {"user_id": known["user"]},
        {"history": ["NOPE"]},
        {"user_id": "stranger", "history": [known["items"][4]]},
    ]
    response = client.post("/v1/recommendations/batch", json={"queries": queries, "k": 3})
    assert response.status_code == 200
    body = response.json()
    results = body["results"]
    assert body["bundle_version"] == known["version"] and len(results) == 4
    assert [r["fallback"] for r in results] == [False, False, True, False]
    assert results[1]["user_id"] == known["user"]
    single = client.get(f"/v1/users/{known['user']}/recommendations", params={"k": 3}).json()
    assert results[1]["items"] == single["items"]  # batched scoring equals one-by-one


def test_similar_items(client, known):
    item = known["items"][5]
    body = client.get(f"/v1/items/{item}/similar", params={"k": 4}).json()
    assert body["item_id"] == item and len(body["items"]) == 4
    assert item not in {i["item_id"] for i in body["items"]}
    error = assert_clean_error(client.get("/v1/items/NO-SUCH-ITEM/similar"), 404)
    assert "NO-SUCH-ITEM" in error["message"]


# -- events ------------------------------------------------------------------------------------------------
def _events(user, items, prefix):
    return [
        {"event_id": f"{prefix}-{i}", "user_id": user, "item_id": item, "timestamp": f"2026-01-01T00:00:{i:02d}Z"}
        for i, item in enumerate(items)
    ]


def test_events_change_the_next_recommendations_and_retries_are_not_double_counted(client, known):
    user = "live-user-1"  # unknown to the bundle: popularity until it sends events
    before = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
    assert before["fallback"] is True
    events = _events(user, known["items"][10:13], "live1")
    first = client.post("/v1/events", json={"events": events})
    assert first.status_code == 200 and first.json()["accepted"] == 3 and first.json()["duplicates"] == 0
    retry = client.post("/v1/events", json={"events": events}).json()
    assert retry["accepted"] == 0 and retry["duplicates"] == 3
    after = client.get(f"/v1/users/{user}/recommendations", params={"k": 5}).json()
    assert after["fallback"] is False and after["history_length"] == 3
    assert not {i["item_id"] for i in after["items"]} & set(known["items"][10:13])


def test_an_event_id_reused_with_another_payload_is_a_conflict_and_nothing_of_its_batch_is_stored(client, known):
    original = _events("conflict-user", known["items"][20:21], "conflict")
    assert client.post("/v1/events", json={"events": original}).json()["accepted"] == 1
    changed = [{**original[0], "item_id": known["items"][21]}, *_events("conflict-user", known["items"][22:23], "new")]
    error = assert_clean_error(client.post("/v1/events", json={"events": changed}), 409)
    assert error["code"] == "event_id_conflict" and "conflict-0" in error["message"]
    assert client.post("/v1/events", json={"events": changed[1:]}).json()["accepted"] == 1  # was not stored
    assert client.post("/v1/events", json={"events": original}).json()["duplicates"] == 1  # a true retry


def test_events_extend_a_known_users_history(client, known):
    user = known["user"]
    before = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    new_item = before["items"][0]["item_id"]  # the top pick, now consumed
    response = client.post("/v1/events", json={"events": _events(user, [new_item], "known-extend")})
    assert response.json()["accepted"] == 1
    after = client.get(f"/v1/users/{user}/recommendations", params={"k": 10}).json()
    assert after["history_length"] == before["history_length"] + 1
    assert new_item not in {i["item_id"] for i in after["items"]}


def test_event_ids_are_integers_or_strings_and_timestamps_unix_or_iso(client):
    events = [
        {"event_id": "int-ids", "user_id": 42, "item_id": 7, "timestamp": 1767225600},
        {"event_id": "with-type", "user_id": "u", "item_id": "i", "timestamp": "2026-01-01T00:00:00+02:00",
         "event_type": "purchase", "value": 9.5},
    ]  # fmt: skip
    assert client.post("/v1/events", json={"events": events}).json()["accepted"] == 2


# -- operations --------------------------------------------------------------------------------------------
def test_health_ready_and_metrics(client, known):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["bundle_version"] == known["version"]
    client.get("/v1/users/metrics-probe-unknown/recommendations")
    text = client.get("/metrics").text
    assert f'recsys_bundle_info{{version="{known["version"]}"}} 1.0' in text
    assert 'recsys_http_requests_total{method="GET",route="/v1/users/{user_id}/recommendations",status="200"}' in text
    assert "recsys_http_request_duration_seconds_bucket" in text
    assert 'recsys_fallbacks_total{reason="unknown_user"}' in text
    assert "recsys_journal_lag_events 0.0" in text
    assert "recsys_journal_pending_batches" in text


def test_admin_reload_needs_the_key(client, known):
    assert_clean_error(client.post("/v1/admin/reload"), 401)
    assert_clean_error(client.post("/v1/admin/reload", headers={"X-API-Key": "wrong"}), 403)
    assert_clean_error(client.post("/v1/admin/reload", headers={"X-API-Key": API_KEY[:-1]}), 403)
    response = client.post("/v1/admin/reload", headers={"X-API-Key": API_KEY})
    assert response.status_code == 200
    assert response.json() == {
        "status": "unchanged",
        "bundle_version": known["version"],
        "previous_version": known["version"],
    }


# -- bad input: 4xx with a clear message, never a 500, never a path -----------------------------------------
@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "fragment"),
    [
        ("GET", "/v1/users/u/recommendations", {"params": {"k": 0}}, 422, "query.k"),
        ("GET", "/v1/users/u/recommendations", {"params": {"k": -5}}, 422, "greater than or equal to 1"),
        ("GET", "/v1/users/u/recommendations", {"params": {"k": 10**30}}, 422, "less than or equal to 1000"),
        ("GET", "/v1/users/u/recommendations", {"params": {"k": "ten"}}, 422, "valid integer"),
        ("GET", "/v1/users/u/recommendations", {"params": {"exclude_seen": "maybe"}}, 422, "exclude_seen"),
        ("POST", "/v1/recommendations", {"content": b'{"history": ["a"', "headers": JSON}, 400, "not valid JSON"),
        ("POST", "/v1/recommendations", {"content": b"history=a"}, 415, "application/json"),
        ("POST", "/v1/recommendations", {"json": {"history": "not-a-list"}}, 422, "body.history"),
        ("POST", "/v1/recommendations", {"json": {"history": [1.5]}}, 422, "body.history.0"),
        ("POST", "/v1/recommendations", {"json": {"history": [True]}}, 422, "body.history.0"),
        ("POST", "/v1/recommendations", {"json": {"history": [], "k": 1001}}, 422, "body.k"),
        ("POST", "/v1/recommendations", {"json": {"hisotry": ["a"]}}, 422, "body.hisotry"),
        ("POST", "/v1/recommendations", {"json": {"history": ["x" * 300]}}, 422, "at most 256"),
        ("POST", "/v1/recommendations", {"json": [1, 2]}, 422, "body"),
        ("POST", "/v1/recommendations/batch", {"json": {"queries": []}}, 422, "body.queries"),
        ("POST", "/v1/events", {"json": {"events": []}}, 422, "body.events"),
        ("POST", "/v1/events", {"json": {"events": [{"event_id": "e", "user_id": "u", "item_id": "i"}]}}, 422,
         "timestamp"),
        ("POST", "/v1/events", {"json": {"events": [{"event_id": "e", "user_id": "u", "item_id": "i",
                                                       "timestamp": "yesterday"}]}}, 422, "timestamp"),
        ("POST", "/v1/events", {"content": b'{"events": [{"event_id": "e", "user_id": "u", "item_id": "i", '
                                           b'"timestamp": 1, "value": NaN}]}',
                                "headers": JSON}, 422, "value"),
        ("POST", "/v1/recommendations", {"json": {"history": ["a" * 200] * 400}}, 413, "limit of 65536 bytes"),
        ("POST", "/v1/events", {"content": b'{"events": [{"event_id": "e", "user_id": "u", "item_id": "i", '
                                           b'"timestamp": 1' + b"0" * 400 + b'}]}',
                                "headers": JSON}, 422, "between 1970 and 2200"),
        ("POST", "/v1/events", {"json": {"events": [{"event_id": "e", "user_id": "u", "item_id": "i",
                                                       "timestamp": 1767225600000}]}}, 422, "milliseconds"),
        ("POST", "/v1/events", {"json": {"events": [{"event_id": "e", "user_id": "u", "item_id": "i",
                                                       "timestamp": "9999-01-01T00:00:00Z"}]}}, 422, "2200"),
        ("POST", "/v1/events", {"json": {"events": [{"event_id": "e", "user_id": 10**4000, "item_id": "i",
                                                       "timestamp": 1}]}}, 422, "body.events.0.user_id"),
        ("POST", "/v1/recommendations", {"json": {"history": [2**64]}}, 422, "body.history.0"),
        ("GET", "/v1/nope", {}, 404, "no such route"),
        ("GET", "/etc/passwd", {}, 404, "no such route"),
        ("DELETE", "/v1/events", {}, 405, "not allowed"),
        ("GET", "/v1/items/" + "x" * 300 + "/similar", {}, 422, "path.item_id"),
    ],
)  # fmt: skip
def test_bad_input_gets_a_clear_4xx(client, method, path, kwargs, status, fragment):
    error = assert_clean_error(client.request(method, path, **kwargs), status)
    assert fragment in error["message"], error


def test_a_client_request_id_is_kept_only_when_it_is_a_plain_token(client):
    plain = client.get("/healthz", headers={"X-Request-ID": "trace-42.a:b"})
    assert plain.headers["x-request-id"] == "trace-42.a:b"
    for hostile in ("a b", "x" * 200, "line\tbreak", "<script>"):
        echoed = client.get("/healthz", headers={"X-Request-ID": hostile}).headers["x-request-id"]
        assert echoed != hostile and echoed  # replaced by the service's own ID


def test_a_body_that_never_finishes_gets_408_and_the_connection_is_freed(server):
    request = (
        b"POST /v1/recommendations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n" + b'{"history": ['
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(request)  # 13 of the 100 promised bytes, then nothing
        started = time.monotonic()
        answer = conn.recv(65536)
        waited = time.monotonic() - started
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 2 s" in body and 1.5 < waited < 8


def test_oversized_chunked_body_without_length_is_refused(client):
    def chunks():
        for _ in range(100):
            yield b"x" * 1000

    assert_clean_error(client.post("/v1/events", content=chunks()), 413)


def test_openapi_documents_the_contract(client):
    spec = client.get("/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/v1/users/{user_id}/recommendations",
        "/v1/recommendations",
        "/v1/recommendations/batch",
        "/v1/events",
        "/v1/items/{item_id}/similar",
        "/v1/admin/reload",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path
    assert "413" in paths["/v1/events"]["post"]["responses"]
    assert paths["/v1/events"]["post"]["responses"]["422"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "/ErrorResponse"
    )


SERVING_WITHOUT_TORCH = """
import importlib, pkgutil, sys
import serving
for module in pkgutil.walk_packages(serving.__path__, "serving."):
    importlib.import_module(module.name)
from recsys.settings import Settings
from serving.app import create_app
create_app(Settings())
print("TORCH" if "torch" in sys.modules else "NO_TORCH")
"""


def test_no_serving_module_imports_torch():
    out = subprocess.run([sys.executable, "-c", SERVING_WITHOUT_TORCH], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("NO_TORCH"), json.dumps(out.stdout[-500:])
