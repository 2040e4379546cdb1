"""Small pieces of the service that need no server: error messages without paths, live histories, the
timestamp and integer rules of the request schemas."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from recsys.bundle import BundleError
from serving.journal import JournalRow
from serving.live import LiveCutoff, LiveHistory, cutoff_for
from serving.schemas import Event, RecommendRequest
from serving.state import public_message

ALL = LiveCutoff(None, 0.0)  # every stored event is live (no bundle)


def test_public_message_keeps_versions_and_file_names_but_no_server_path(tmp_path):
    root = tmp_path / "bundles"
    exc = BundleError(f"bundle {root}/v2 is corrupt: items.faiss has sha256 abc…, manifest says def…")
    assert public_message(exc, root) == "bundle v2 is corrupt: items.faiss has sha256 abc…, manifest says def…"
    other = BundleError("cannot read /var/lib/secret/place/user_encoder.onnx")
    assert public_message(other, root) == "cannot read user_encoder.onnx"
    crash = RuntimeError(f"onnxruntime could not open {root}/v2/user_encoder.onnx")
    message = public_message(crash, root)
    assert "RuntimeError" in message and str(tmp_path) not in message and "/" not in message


def _row(seq, user, item, ts, received):
    return JournalRow(seq=seq, user_id=user, item_id=item, timestamp=ts, received_at=received)


def test_live_history_orders_by_event_time_caps_and_filters_by_bundle_time():
    live = LiveHistory(per_user=3)
    live.apply([_row(1, "u", "b", ts=20.0, received=100.0), _row(2, "u", "a", ts=10.0, received=100.0)])
    assert live.items("u", ALL) == ["a", "b"]  # a batch's events in their own time order
    live.apply([_row(3, "u", "c", 30.0, 200.0), _row(4, "u", "d", 40.0, 200.0)])
    assert live.items("u", ALL) == ["b", "c", "d"]  # capped at per_user, newest kept
    assert live.items("u", LiveCutoff(None, 150.0)) == ["c", "d"]  # only what the bundle cannot know
    assert live.items("nobody", ALL) == []


def test_live_history_follows_the_ingest_watermark_not_the_bundle_time():
    """Events that arrived after the nightly's ingest but before its bundle was built are not in the bundle:
    with a watermark they stay live, even though they were received before the bundle's creation time."""
    live = LiveHistory(per_user=10)
    live.apply([_row(1, "u", "a", 1.0, 100.0), _row(2, "u", "b", 2.0, 110.0), _row(3, "u", "c", 3.0, 120.0)])
    ingested_up_to_1_built_at_130 = LiveCutoff(seq=1, received_ts=130.0)
    assert live.items("u", ingested_up_to_1_built_at_130) == ["b", "c"]
    assert live.items("u", LiveCutoff(None, 130.0)) == []  # what pruning by creation time used to lose
    # a newer bundle, then a rollback to the one before it: its live events are back
    assert live.items("u", LiveCutoff(seq=3, received_ts=200.0)) == []
    assert live.items("u", ingested_up_to_1_built_at_130) == ["b", "c"]


class _Bundle:
    def __init__(self, mark, created_ts=50.0):
        self.events_watermark, self.created_ts = mark, created_ts


def test_cutoff_uses_the_watermark_only_from_the_same_store():
    mark = {"location": "sqlite", "store_id": "s1", "seq": 7}
    assert cutoff_for(_Bundle(mark), "sqlite", "s1") == LiveCutoff(7, 50.0)
    assert cutoff_for(_Bundle(mark), "sqlite", "other") == LiveCutoff(None, 50.0)  # another store's seq
    assert cutoff_for(_Bundle(mark), "redis://h:1/0", "s1") == LiveCutoff(None, 50.0)
    assert cutoff_for(_Bundle(None), "sqlite", "s1") == LiveCutoff(None, 50.0)  # a bundle built by hand
    assert cutoff_for(None, "sqlite", "s1") == ALL


def test_live_history_keeps_the_most_recently_active_users_and_counts_them():
    from serving import metrics

    live = LiveHistory(per_user=5, max_users=2)
    live.apply([_row(1, "a", "x", 1.0, 1.0), _row(2, "b", "x", 1.0, 1.0)])
    live.apply([_row(3, "a", "y", 2.0, 2.0)])  # a is now the most recent
    live.apply([_row(4, "c", "x", 3.0, 3.0)])  # over the bound: b, the least recently active, goes
    assert len(live) == 2 and live.items("b", ALL) == []
    assert live.items("a", ALL) == ["x", "y"] and live.items("c", ALL) == ["x"]
    assert metrics.LIVE_USERS._value.get() == 2  # noqa: SLF001 - the gauge /metrics reports


def _event(timestamp):
    return {"event_id": "e", "user_id": "u", "item_id": "i", "timestamp": timestamp}


@pytest.mark.parametrize(
    ("timestamp", "expected"),
    [
        ("2026-01-01T00:00:00Z", 1767225600.0),
        ("2026-01-01T02:00:00+02:00", 1767225600.0),
        ("2026-01-01t00:00:00.5000000001z", 1767225600.5),
        (1767225600, 1767225600.0),
        (1767225600.25, 1767225600.25),
    ],
)
def test_event_timestamps_rfc3339_or_unix_seconds(timestamp, expected):
    assert Event.model_validate(_event(timestamp)).timestamp == expected


@pytest.mark.parametrize(
    "timestamp", ["2026-01-01", "2026-01-01T00:00:00", "0000-01-01T00:00:00Z", "1767225600", True, None, float("inf")]
)
def test_ambiguous_or_invalid_timestamps_are_refused(timestamp):
    with pytest.raises(ValidationError, match="timestamp"):
        Event.model_validate(_event(timestamp))


def test_k_follows_json_schema_integers():
    assert RecommendRequest.model_validate({"k": 12.0}).k == 12
    for bad in (True, "12", 12.5, 0, 1001):
        with pytest.raises(ValidationError):
            RecommendRequest.model_validate({"k": bad})
    assert RecommendRequest.model_validate({"history": [1, "a"]}).history == ["1", "a"]


def test_settings_defaults_for_the_service(monkeypatch, tmp_path):
    from recsys.settings import Settings

    monkeypatch.setenv("RECSYS_WORK_DIR", str(tmp_path))
    settings = Settings()
    assert settings.host == "127.0.0.1" and settings.workers == 1 and settings.threads == 1
    assert settings.api_key is None  # admin routes refuse everything until a key is configured
    assert settings.bundles_dir == Path(tmp_path) / "bundles"
    assert settings.journal_file == Path(tmp_path) / "journal" / "events.sqlite3"
