"""Every importer parses its format into all-string events with a 0-based ``row`` (files in tmp_path)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from recsys.data.importers import (
    FORMATS,
    read_csv_events,
    read_dataset,
    read_movielens,
    read_recbole,
    read_sequence_file,
    read_table_events,
)
from recsys.data.validate import validate


def assert_raw_events(events: pl.DataFrame) -> None:
    """The importer contract: every column a string except Int64 ``row`` = 0..n-1."""
    for name, dtype in events.schema.items():
        assert dtype == (pl.Int64 if name == "row" else pl.String), (name, dtype)
    assert events["row"].to_list() == list(range(events.height))
    assert {"user_id", "item_id", "timestamp"} <= set(events.columns)


# ------------------------------------------------------------------------------------------- csv/parquet


def test_csv_keeps_strings_and_maps_columns(tmp_path: Path) -> None:
    events = tmp_path / "events.csv"
    events.write_text("userId,itemId,ts,rating,note\n7,42,100,4.5,x\n007,abc,not-a-time,high,\n8,42,200,,y\n")
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text("sku,name,price\n42,Widget,9.99\nabc,Gadget,cheap\n")
    raw = read_csv_events(
        events,
        catalogue,
        columns={"userId": "user_id", "itemId": "item_id", "ts": "timestamp", "rating": "value"},
        catalogue_columns={"sku": "item_id", "name": "title"},
    )
    assert_raw_events(raw.events)
    # leading zeros and bad values survive untouched for validation to judge
    assert raw.events["user_id"].to_list() == ["7", "007", "8"]
    assert raw.events["timestamp"].to_list() == ["100", "not-a-time", "200"]
    assert raw.events["value"].to_list() == ["4.5", "high", None]
    assert raw.catalogue is not None
    assert raw.catalogue.columns == ["item_id", "title", "price"]
    assert raw.catalogue["price"].to_list() == ["9.99", "cheap"]


def test_csv_missing_columns_and_bad_mapping_are_explained(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("userId,item_id,timestamp\n1,2,3\n")
    with pytest.raises(ValueError, match=r"user_id.*column mapping"):
        read_csv_events(path)
    with pytest.raises(ValueError, match="column mapping names"):
        read_csv_events(path, columns={"uid": "user_id"})
    with pytest.raises(FileNotFoundError):
        read_csv_events(tmp_path / "nope.csv")


def test_parquet_is_rendered_as_strings_and_datetimes_as_epoch_seconds(tmp_path: Path) -> None:
    path = tmp_path / "events.parquet"
    pl.DataFrame(
        {
            "user_id": [1, 2],
            "item_id": ["a", "b"],
            "timestamp": [datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 2, 0, 0, 1, tzinfo=UTC)],
            "value": [1.5, None],
        }
    ).write_parquet(path)
    raw = read_table_events(path)
    assert_raw_events(raw.events)
    assert raw.events["timestamp"].to_list() == ["1577836800", "1577923201"]
    assert raw.events["user_id"].to_list() == ["1", "2"]
    validated = validate(raw)
    assert validated.events["timestamp"].to_list() == [1577836800, 1577923201]
    assert validated.events["value"].to_list() == [1.5, None]


# ------------------------------------------------------------------------------------------- MovieLens


def write_movielens(folder: Path, ratings_name: str = "ratings.dat") -> None:
    folder.mkdir(exist_ok=True)
    (folder / ratings_name).write_text("1::10::5::978300760\n1::20::3::978302109\n\n2::10::4::978301968\n")
    movies = "10::Misérables, Les (1995)::Drama|Musical\n20::Star Wars: Episode IV - A New Hope (1977)::Sci-Fi\n"
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))


def test_movielens_dat_with_latin1_catalogue(tmp_path: Path) -> None:
    write_movielens(tmp_path)
    raw = read_movielens(tmp_path)
    assert_raw_events(raw.events)
    assert raw.events.select("user_id", "item_id", "value", "timestamp").rows() == [
        ("1", "10", "5", "978300760"),
        ("1", "20", "3", "978302109"),
        ("2", "10", "4", "978301968"),
    ]
    assert raw.catalogue is not None
    assert raw.catalogue.rows() == [
        ("10", "Misérables, Les (1995)", "Drama|Musical"),
        ("20", "Star Wars: Episode IV - A New Hope (1977)", "Sci-Fi"),
    ]
    assert raw.catalogue.columns == ["item_id", "title", "category"]


def test_movielens_ratings_file_choice(tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    write_movielens(partial, "ratings.users_0001-0002.dat")
    assert read_movielens(partial).events.height == 3  # the single ratings*.dat stands in, with a warning

    both = tmp_path / "both"
    write_movielens(both, "ratings.dat")
    (both / "ratings.extra.dat").write_text("9::10::1::1\n")
    assert read_movielens(both).events.height == 3  # ratings.dat wins
    assert read_movielens(both, ratings_file="ratings.extra.dat").events.height == 1

    several = tmp_path / "several"
    write_movielens(several, "ratings.a.dat")
    (several / "ratings.b.dat").write_text("9::10::1::1\n")
    with pytest.raises(ValueError, match="ratings_file"):
        read_movielens(several)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="ratings"):
        read_movielens(empty)


# ---------------------------------------------------------------------------------------- sequences


def test_sequence_file_positions_and_global_rows(tmp_path: Path) -> None:
    path = tmp_path / "Beauty.txt"
    path.write_text("1 1 2 3\n2  4   2\n\n3 5\n4\n")
    raw = read_sequence_file(path)
    assert_raw_events(raw.events)
    assert raw.events.select("user_id", "item_id", "timestamp").rows() == [
        ("1", "1", "0"),
        ("1", "2", "1"),
        ("1", "3", "2"),
        ("2", "4", "0"),
        ("2", "2", "1"),
        ("3", "5", "0"),
    ]
    assert raw.catalogue is None


# -------------------------------------------------------------------------------------------- RecBole

SEQUENCES = {0: [0, 1, 2, 3, 4, 5, 6], 1: [3, 2, 7, 2, 1]}  # user 1 repeats item 2
ITEMS = ["B000", "B001", "B002", "B003", "B004", "B005", "B006", "B007"]
USERS = ["AUSER0", "AUSER1"]


def write_unisrec(folder: Path, name: str, sequences: dict[int, list[int]], max_hist: int = 50) -> None:
    """Leave-one-out samples the way UniSRec writes them: train holds every earlier prefix, longest first."""
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"

    def sample(user: int, seq: list[int], k: int) -> str:
        return f"{user}\t{' '.join(map(str, seq[:k][-max_hist:]))}\t{seq[k]}\n"

    train, valid, test = [header], [header], [header]
    for user, seq in sequences.items():
        test.append(sample(user, seq, len(seq) - 1))
        valid.append(sample(user, seq, len(seq) - 2))
        train += [sample(user, seq, k) for k in range(len(seq) - 3, 0, -1)]
    for split, lines in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{name}.{split}.inter").write_text("".join(lines))
    (folder / f"{name}.item2index").write_text("".join(f"{raw}\t{i}\n" for i, raw in enumerate(ITEMS)))
    (folder / f"{name}.user2index").write_text("".join(f"{raw}\t{i}\n" for i, raw in enumerate(USERS)))


def write_item_text(folder: Path, name: str) -> None:
    rows = ["item_id:token\ttext:token_seq"]
    for i, asin in enumerate(ITEMS):
        title = f"Mr. Tool {i}" if i == 1 else f"Tool {i}"  # "Mr. " breaks the clean 3-way split
        rows.append(f"{asin}\t{title}. Industrial & Scientific Lab Supplies. Brand{i}. ")
    (folder / f"{name}.text").write_text("\n".join(rows) + "\n")
    records = [
        {
            "asin": "B000",
            "brand": "Brand0",
            "categories": "Industrial & Scientific,Lab",
            "description": "<p>Great <b>tool</b>.</p>",
        },
        {
            "asin": "B001",
            "brand": "Brand1",
            "categories": "Industrial & Scientific,Tools",
            "description": ".",
        },
    ]
    (folder / f"{name}.descriptions.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")


@pytest.mark.parametrize("max_hist", [50, 3])
def test_recbole_leave_one_out_rebuilds_full_sequences(tmp_path: Path, max_hist: int) -> None:
    write_unisrec(tmp_path, "Sci", SEQUENCES, max_hist=max_hist)
    write_item_text(tmp_path, "Sci")
    raw = read_recbole(tmp_path)
    assert_raw_events(raw.events)
    rebuilt = raw.events.group_by("user_id", maintain_order=True).agg("item_id", "timestamp")
    assert rebuilt["user_id"].to_list() == USERS
    assert rebuilt["item_id"].to_list() == [[ITEMS[i] for i in seq] for seq in SEQUENCES.values()]
    assert rebuilt["timestamp"].to_list() == [[str(p) for p in range(len(s))] for s in SEQUENCES.values()]

    catalogue = raw.catalogue
    assert catalogue is not None and catalogue.height == len(ITEMS)
    rows = {r["item_id"]: r for r in catalogue.to_dicts()}
    assert rows["B002"]["title"] == "Tool 2. Industrial & Scientific Lab Supplies. Brand2."
    assert rows["B002"]["category"] == "Industrial & Scientific Lab Supplies"
    assert rows["B002"]["brand"] == "Brand2"
    assert rows["B002"]["description"] is None  # no descriptions record for it
    assert rows["B000"]["category"] == "Industrial & Scientific > Lab"  # the structured path wins
    assert rows["B000"]["description"] == "Great tool."  # HTML stripped
    assert rows["B001"]["brand"] == "Brand1"  # from the descriptions file: the text did not split cleanly
    assert rows["B001"]["category"] == "Industrial & Scientific > Tools"
    assert rows["B001"]["description"] is None  # "." is no description
    assert validate(raw).summary["rejected"] == 0


def test_recbole_inconsistent_samples_fail_loudly(tmp_path: Path) -> None:
    write_unisrec(tmp_path, "Sci", SEQUENCES)
    test_file = tmp_path / "Sci.test.inter"
    test_file.write_text(test_file.read_text().replace("0\t0 1 2 3 4 5\t6", "0\t0 1 2 9 4 5\t6"))
    with pytest.raises(ValueError, match="disagree"):
        read_recbole(tmp_path)


def test_recbole_plain_inter_file(tmp_path: Path) -> None:
    path = tmp_path / "ml.inter"
    path.write_text(
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t10\t4.0\t978300760.0\n2\t11\t3\t978300761\n"
    )
    (tmp_path / "ml.item").write_text("item_id:token\ttitle:token_seq\tcategories:token_seq\n10\tA\tx\n11\tB\ty\n")
    for raw in (read_recbole(path), read_recbole(tmp_path), read_dataset(tmp_path, "recbole")):
        assert_raw_events(raw.events)
        assert raw.events.select("user_id", "item_id", "value", "timestamp").rows()[0] == (
            "1",
            "10",
            "4.0",
            "978300760.0",
        )
        assert raw.catalogue is not None
        assert raw.catalogue.columns == ["item_id", "title", "category"]
    assert validate(read_recbole(path)).events["timestamp"].to_list() == [978300760, 978300761]


# ------------------------------------------------------------------------------------------- dispatch


def test_read_dataset_dispatches_every_format(tmp_path: Path) -> None:
    csv = tmp_path / "events.csv"
    csv.write_text("user_id,item_id,timestamp\n1,2,3\n")
    parquet = tmp_path / "events.parquet"
    pl.read_csv(csv, infer_schema=False).write_parquet(parquet)
    seq = tmp_path / "seq.txt"
    seq.write_text("1 2 3\n")
    write_movielens(tmp_path / "ml")
    recbole = tmp_path / "rb"
    recbole.mkdir()
    write_unisrec(recbole, "Sci", SEQUENCES)
    paths = {
        "csv": csv,
        "parquet": parquet,
        "sequences": seq,
        "movielens": tmp_path / "ml",
        "recbole": recbole,
    }
    assert set(paths) == set(FORMATS)
    for fmt, path in paths.items():
        assert_raw_events(read_dataset(path, fmt).events)
    with pytest.raises(ValueError, match="valid formats: csv, parquet, movielens, sequences, recbole"):
        read_dataset(csv, "excel")
    with pytest.raises(ValueError, match="column mapping"):
        read_dataset(seq, "sequences", columns={"a": "b"})
