"""Hot reload against a real server: promoting a new bundle under a steady request stream drops nothing and
switches once; a corrupt bundle is refused while the old one serves on."""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import pytest

from recsys import bundle
from recsys.harness import ServerProcess

API_KEY = "reload-test-key"


class Stream:
    """A bounded, steady stream of recommendation requests from 2 clients, recording every answer."""

    def __init__(self, url: str, user: str) -> None:
        self.url, self.user = url, user
        self.records: list[tuple[float, int, str | None, str | None]] = []  # (t, status, header, body version)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(2)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            deadline = time.monotonic() + 60  # bounded whatever happens
            while not self.stop.is_set() and time.monotonic() < deadline:
                try:
                    response = client.get(f"/v1/users/{self.user}/recommendations", params={"k": 5})
                    body = response.json() if response.status_code == 200 else {}
                    record = (time.monotonic(), response.status_code, response.headers.get("x-bundle-version"),
                              body.get("bundle_version"))  # fmt: skip
                except httpx.HTTPError as exc:
                    record = (time.monotonic(), -1, None, repr(exc))
                with self.lock:
                    self.records.append(record)
                time.sleep(0.005)  # ~150-200 requests/s in all: steady, not a load test

    def __enter__(self) -> Stream:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def wait_for(self, version: str, then_s: float = 1.0, timeout_s: float = 30.0) -> None:
        """Until answers carry `version`, then `then_s` seconds more."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if any(r[3] == version for r in self.records):
                    break
            time.sleep(0.05)
        time.sleep(then_s)


@pytest.fixture()
def bundles_root(tiny_bundle, tmp_path):
    """A private bundles root (tests here promote and corrupt bundles) holding a copy of the tiny bundle."""
    _, bundle_dir = tiny_bundle
    root = tmp_path / "bundles"
    root.mkdir()
    shutil.copytree(bundle_dir, root / bundle_dir.name)
    bundle.promote(root, bundle_dir.name)
    return root


def _new_bundle(root, tiny_prepared, tiny_lm) -> str:
    from training import pipeline
    from training.export import export_bundle

    prepared, _ = tiny_prepared
    sequences = pipeline.build_sequences(prepared.events, prepared.vocab)
    return export_bundle(tiny_lm, sequences, root, prepared.catalogue, {"metrics": {}}, promote=False).name


def _corrupt_copy(root, version: str, name: str) -> str:
    """A copy of a bundle under a new version whose items.faiss no longer matches the manifest."""
    target = root / name
    shutil.copytree(root / version, target)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["version"] = name
    (target / "manifest.json").write_text(json.dumps(manifest))
    data = bytearray((target / "items.faiss").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (target / "items.faiss").write_bytes(bytes(data))
    return name


def _point_current_at(root, version: str) -> None:
    """What a broken deploy or a disk fault would do: CURRENT names a bundle that does not verify."""
    tmp = root / ".CURRENT.test"
    tmp.write_text(version + "\n")
    tmp.replace(root / bundle.CURRENT)


def test_promotion_under_steady_traffic_switches_once_with_no_failures(bundles_root, tiny_prepared, tiny_lm, tmp_path):
    old = bundle.current_version(bundles_root)
    env = {"RECSYS_RELOAD_POLL_S": "0.2", "RECSYS_API_KEY": API_KEY}
    with ServerProcess(bundles_root, tmp_path / "work", env=env) as server:
        user = "reload-user"
        with Stream(server.url, user) as stream:
            time.sleep(0.5)
            new = _new_bundle(bundles_root, tiny_prepared, tiny_lm)
            bundle.promote(bundles_root, new)
            stream.wait_for(new, then_s=1.0)

            # Then a corrupt bundle: refused, the new one keeps serving, the failure is visible.
            bad = _corrupt_copy(bundles_root, new, "corrupt-version")
            _point_current_at(bundles_root, bad)
            time.sleep(1.5)  # several watcher polls
        records = stream.records

        statuses = [r[1] for r in records]
        assert statuses and set(statuses) == {200}, [r for r in records if r[1] != 200][:5]
        versions = [r[3] for r in records]
        assert all(r[2] == r[3] for r in records), "header and body disagree on the version"
        assert set(versions) == {old, new}
        switch = versions.index(new)
        assert set(versions[:switch]) == {old} and set(versions[switch:]) == {new}, (
            "a response after the switch came from the old bundle"
        )
        assert len(versions) - switch > 50 and switch > 20

        client = httpx.Client(base_url=server.url, timeout=10)
        ready = client.get("/readyz").json()
        assert ready["bundle_version"] == new and "items.faiss" in ready["last_error"]
        assert "/" not in ready["last_error"].replace("<bundles>", ""), ready["last_error"]
        refused = client.post("/v1/admin/reload", headers={"X-API-Key": API_KEY})
        assert refused.status_code == 409
        message = refused.json()["error"]["message"]
        assert "items.faiss" in message and f"still serving {new}" in message and str(tmp_path) not in message
        metrics = client.get("/metrics").text
        assert 'recsys_bundle_reloads_total{result="failed"}' in metrics
        info = [line for line in metrics.splitlines() if line.startswith("recsys_bundle_info{")]
        assert info == [f'recsys_bundle_info{{version="{new}"}} 1.0'], info

        # Pointing CURRENT back at the good bundle needs no reload (it is serving); the old one can come back.
        _point_current_at(bundles_root, old)
        ok = client.post("/v1/admin/reload", headers={"X-API-Key": API_KEY})
        assert ok.status_code == 200 and ok.json()["bundle_version"] == old and ok.json()["previous_version"] == new
        client.close()
    refusals = [r for r in server.log_records() if r.get("msg") == "bundle refused"]
    assert refusals and refusals[0]["version"] == "corrupt-version"


def test_service_starts_unready_without_a_bundle_and_serves_once_one_is_promoted(tiny_bundle, tmp_path):
    _, bundle_dir = tiny_bundle
    root = tmp_path / "empty-root"
    root.mkdir()
    env = {"RECSYS_RELOAD_POLL_S": "0.2"}
    with ServerProcess(root, tmp_path / "work", env=env, ready_path="/healthz") as server:
        client = httpx.Client(base_url=server.url, timeout=10)
        assert client.get("/readyz").status_code == 503
        error = client.get("/v1/users/u/recommendations").json()["error"]
        assert error["code"] == "not_ready"
        # Events are still journalled without a bundle.
        event = {"event_id": "early", "user_id": "u", "item_id": "i", "timestamp": 0}
        assert client.post("/v1/events", json={"events": [event]}).json() == {
            "accepted": 1,
            "duplicates": 0,
            "bundle_version": None,
        }
        shutil.copytree(bundle_dir, root / bundle_dir.name)
        bundle.promote(root, bundle_dir.name)
        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert client.get("/v1/users/u/recommendations").json()["bundle_version"] == bundle_dir.name
        client.close()
