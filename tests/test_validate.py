"""Validation sends every bad row to rejects with the right reason; prepared directories round-trip."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recsys.data.importers import RawData, read_csv_events
from recsys.data.prepared import load_prepared, write_prepared
from recsys.data.sequences import build_sequences
from recsys.data.validate import EVENT_SCHEMA, RejectRateExceeded, Validated, validate

# (csv line, expected reason or None); the first failing check wins
ROWS = [
    ("u1,i1,100,view,1.0", None),
    (",i1,101,view,1", "missing_user_id"),
    ("   ,i2,101,view,1", "missing_user_id"),  # blank is missing
    ("u1,,102,view,1", "missing_item_id"),
    ("u1,i2,not-a-time,view,1", "bad_timestamp"),
    ("u1,i2,2020-13-45,view,1", "bad_timestamp"),
    ("u1,i2,,view,1", "bad_timestamp"),
    ("u1,i3,103,view,abc", "bad_value"),
    ("u1,i3,104,view,inf", "bad_value"),
    ("u1,i1,100,buy,2.0", "duplicate"),  # same user, item, timestamp as row 0
    ("u2,i1,2020-01-01T00:00:00Z,view,", None),
    ("u2,i1,1577836800,view,", "duplicate"),  # equal after parsing
    ("u2,i2,1577836800.7,view,3", None),  # float epoch, floored
    (",,garbage,view,x", "missing_user_id"),  # several problems: the first reason applies
    ("u3,i4,2020-01-01 00:00:00+02:00,,", None),
    ("u3,i5,2020-01-02,view, 5 ", None),
    ("u4,i1,1e9,view,1", None),
]


def malformed_csv(tmp_path: Path) -> Path:
    path = tmp_path / "events.csv"
    path.write_text("user_id,item_id,timestamp,event_type,value\n" + "\n".join(line for line, _ in ROWS) + "\n")
    return path


def test_malformed_rows_land_in_rejects_with_reasons(tmp_path: Path) -> None:
    raw = read_csv_events(malformed_csv(tmp_path))
    result = validate(raw, max_reject_rate=1.0)

    assert result.events.height + result.rejects.height == len(ROWS)
    expected = {i: reason for i, (_, reason) in enumerate(ROWS) if reason is not None}
    assert dict(result.rejects.select("row", "reason").iter_rows()) == expected
    assert result.events["row"].to_list() == [i for i, (_, r) in enumerate(ROWS) if r is None]

    # rejects keep the original strings; events are typed
    assert result.rejects.filter(pl.col("row") == 4)["timestamp"].item() == "not-a-time"
    assert set(result.rejects.columns) == {
        "user_id",
        "item_id",
        "timestamp",
        "event_type",
        "value",
        "row",
        "reason",
    }
    assert dict(result.events.schema) == EVENT_SCHEMA
    by_row = {r["row"]: r for r in result.events.to_dicts()}
    assert by_row[10]["timestamp"] == 1577836800 and by_row[10]["value"] is None
    assert by_row[12]["timestamp"] == 1577836800 and by_row[12]["value"] == 3.0
    assert by_row[14]["timestamp"] == 1577829600 and by_row[14]["event_type"] is None
    assert by_row[15]["timestamp"] == 1577923200 and by_row[15]["value"] == 5.0
    assert by_row[16]["timestamp"] == 1_000_000_000

    summary = result.summary
    assert summary["input_rows"] == len(ROWS)
    assert summary["accepted"] == 6 and summary["rejected"] == 11
    assert summary["reasons"] == {
        "missing_user_id": 3,
        "missing_item_id": 1,
        "bad_timestamp": 3,
        "bad_value": 2,
        "unknown_item": 0,
        "duplicate": 2,
    }
    assert summary["reject_rate"] == pytest.approx(11 / 17)
    assert summary["users"] == 4 and summary["items"] == 4


def test_reject_rate_exceeded_explains_and_writes_rejects(tmp_path: Path) -> None:
    raw = read_csv_events(malformed_csv(tmp_path))
    rejects_path = tmp_path / "out" / "rejects.parquet"
    with pytest.raises(RejectRateExceeded) as caught:
        validate(raw, max_reject_rate=0.05, rejects_path=rejects_path)
    error = caught.value
    assert isinstance(error, ValueError)
    message = str(error)
    assert "64.71%" in message and "5.00%" in message  # the rate and the threshold
    assert "missing_user_id 3" in message and "bad_timestamp 3" in message  # top reasons with counts
    assert str(rejects_path) in message
    assert "--max-reject-rate" in message and "Fix the source" in message
    assert pl.read_parquet(rejects_path).height == 11
    assert error.rejects.height == 11 and error.rate == pytest.approx(11 / 17)

    with pytest.raises(RejectRateExceeded, match="no rejects file was written"):
        validate(raw)


def test_catalogue_checks_and_unknown_items() -> None:
    events = pl.DataFrame(
        {
            "user_id": ["u1", "u1", "u2", "u2"],
            "item_id": ["a", "b", "zzz", "dup"],
            "timestamp": ["1", "2", "3", "4"],
        }
    )
    catalogue = pl.DataFrame(
        {
            "item_id": ["a", "b", "a", "notitle", " ", "dup"],
            "title": ["A", "B", "A again", "  ", "blank id", "Dup"],
            "price": ["1.50", "cheap", "3", "4", "5", "-2"],
            "colour": ["red"] * 6,
        }
    )
    result = validate(RawData(events, catalogue), max_reject_rate=0.5)
    assert result.catalogue is not None and result.catalogue_rejects is not None
    assert result.catalogue["item_id"].to_list() == ["a", "b", "dup"]
    assert result.catalogue["title"].to_list() == ["A", "B", "Dup"]  # first row per item kept
    assert result.catalogue["price"].to_list() == [1.5, None, None]  # bad or negative price -> null
    assert result.catalogue_rejects["reason"].to_list() == ["duplicate", "missing_title", "missing_item_id"]
    assert result.rejects["reason"].to_list() == ["unknown_item"]
    cat_summary = result.summary["catalogue"]
    assert cat_summary["reasons"] == {"missing_item_id": 1, "missing_title": 1, "duplicate": 1}
    assert cat_summary["bad_price"] == 2 and cat_summary["ignored_columns"] == ["colour"]
    assert cat_summary["items_without_events"] == 0

    with pytest.raises(ValueError, match="require_catalogue"):
        validate(RawData(events), require_catalogue=True)
    with pytest.raises(ValueError, match="title"):
        validate(RawData(events, catalogue.drop("title")))
    with pytest.raises(ValueError, match="timestamp"):
        validate(RawData(events.drop("timestamp")))


# ------------------------------------------------------------------------------------------- prepared


def small_validated() -> Validated:
    events = pl.DataFrame(
        {
            "user_id": ["u1", "u2", "u1", "u2", "u1", ""],
            "item_id": ["c", "a", "b", "c", "a", "a"],
            "timestamp": ["30", "10", "20", "40", "50", "1"],
        }
    )
    catalogue = pl.DataFrame({"item_id": ["a", "b", "c", "d"], "title": ["A", "B", "C", "D"]})
    return validate(RawData(events, catalogue), max_reject_rate=0.5)


def test_prepared_round_trip(tmp_path: Path) -> None:
    validated = small_validated()
    out = write_prepared(validated, tmp_path / "prepared")
    prepared = load_prepared(out)
    assert_frame_equal(prepared.events, validated.events)
    assert prepared.catalogue is not None
    assert_frame_equal(prepared.catalogue, validated.catalogue)
    assert pl.read_parquet(out / "rejects.parquet")["reason"].to_list() == ["missing_user_id"]
    # first appearance in time: a@10, b@20, c@30; the catalogue-only item d gets no token
    assert prepared.vocab.item_ids == ["a", "b", "c"]
    assert prepared.summary["accepted"] == 5 and prepared.summary["has_catalogue"] is True
    assert prepared.summary["vocab_size"] == 3
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
    sequences = build_sequences(prepared.events, prepared.vocab)
    assert dict(zip(sequences.user_ids, [s.tolist() for s in sequences.items], strict=True)) == {
        "u1": [1, 2, 0],
        "u2": [0, 2],
    }


def test_prepared_without_catalogue_removes_stale_file(tmp_path: Path) -> None:
    out = write_prepared(small_validated(), tmp_path)
    assert (out / "catalogue.parquet").exists()
    events = pl.DataFrame({"user_id": ["u"], "item_id": ["x"], "timestamp": ["1"]})
    write_prepared(validate(RawData(events)), out)
    assert not (out / "catalogue.parquet").exists()
    prepared = load_prepared(out)
    assert prepared.catalogue is None and prepared.vocab.item_ids == ["x"]
    assert pl.read_parquet(out / "rejects.parquet").height == 0  # always written, possibly empty


def test_incomplete_prepared_directory_names_the_missing_file(tmp_path: Path) -> None:
    out = write_prepared(small_validated(), tmp_path)
    (out / "vocab.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing vocab\.json"):
        load_prepared(out)
    summary = json.loads((out / "summary.json").read_text())
    assert "vocab.json" in summary["files"]
    (out / "summary.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"summary\.json is missing"):
        load_prepared(out)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_prepared(tmp_path / "nowhere")
