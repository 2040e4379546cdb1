"""Importers: read event logs and catalogues in each of :data:`FORMATS` into one raw, untyped shape.

Nothing is parsed or cleaned here: :func:`recsys.data.validate.validate` owns typing, so it sees every bad
value and rejects it with a reason instead of an importer dropping or coercing it silently. Only formats whose
structure *is* the data (sequence files, RecBole leave-one-out samples) are reshaped here.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

log = logging.getLogger(__name__)

REQUIRED_EVENT_COLUMNS = ("user_id", "item_id", "timestamp")
OPTIONAL_EVENT_COLUMNS = ("event_type", "value")
CATALOGUE_COLUMNS = ("item_id", "title", "description", "category", "brand", "price")
ROW = "row"
FORMATS = ("csv", "parquet", "movielens", "sequences", "recbole")


@dataclass
class RawData:
    """Events and an optional catalogue, every source column a string, plus the Int64 ``row`` order."""

    # user_id, item_id, timestamp; event_type, value where the source has them; other source columns; row (0-based)
    events: pl.DataFrame
    # item_id, title; description, category, brand, price where the source has them
    catalogue: pl.DataFrame | None = None


# --------------------------------------------------------------------------------------------- helpers


def _all_strings(df: pl.DataFrame) -> pl.DataFrame:
    """Cast every column to String so validation sees the source's values, not a reader's guesses.

    Temporal columns (parquet Datetime/Date) become epoch seconds written as integers: that is an exact
    rendering of the instant (naive datetimes are taken as UTC) and avoids re-parsing a locale-free string.
    """
    return df.select(_string_exprs(df.schema))


def _string_exprs(schema: Mapping[str, pl.DataType]) -> list[pl.Expr]:
    """The casts of :func:`_all_strings`, one per column of `schema`."""
    exprs = []
    for name, dtype in schema.items():
        col = pl.col(name)
        if dtype == pl.String:
            exprs.append(col)
        elif isinstance(dtype, pl.Datetime):
            exprs.append(col.dt.epoch("s").cast(pl.String))
        elif dtype == pl.Date:
            exprs.append(col.cast(pl.Datetime("us")).dt.epoch("s").cast(pl.String))
        else:
            exprs.append(col.cast(pl.String))
    return exprs


def _rename(df: pl.DataFrame, columns: Mapping[str, str] | None, what: str) -> pl.DataFrame:
    """Apply a source -> contract column mapping, naming any mapped column the source lacks."""
    if not columns:
        return df
    missing = [src for src in columns if src not in df.columns]
    if missing:
        raise ValueError(
            f"{what}: column mapping names {missing} but the source has only {df.columns}; "
            "fix the mapping (source name -> contract name)"
        )
    return df.rename(dict(columns))


def _finish_events(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """Check the required columns exist and append the ``row`` column (original order, 0-based)."""
    missing = [c for c in REQUIRED_EVENT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(
            f"{source}: events lack required column(s) {missing}; found {df.columns}. "
            "Map the source names onto user_id, item_id, timestamp with a column mapping "
            "(e.g. {'userId': 'user_id'})."
        )
    if ROW in df.columns:
        raise ValueError(
            f"{source}: the source already has a column named {ROW!r}, which is reserved for the original "
            "row order; rename it with a column mapping (e.g. {'row': 'source_row'})"
        )
    return _all_strings(df).with_row_index(ROW).with_columns(pl.col(ROW).cast(pl.Int64))


def _finish_catalogue(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """Check the catalogue has item IDs and make every column a string (validation types them)."""
    if "item_id" not in df.columns:
        raise ValueError(
            f"{source}: catalogue lacks an item_id column; found {df.columns}. "
            "Map the source name with a catalogue column mapping."
        )
    return _all_strings(df)


def _read_table(path: Path) -> pl.DataFrame:
    """A CSV (all columns read as strings) or parquet file, chosen by suffix."""
    if path.suffix.lower() in {".parquet", ".pq"} or path.is_dir():
        return pl.read_parquet(path)
    return pl.read_csv(path, infer_schema=False)


def _require_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def read_catalogue(path: str | Path, columns: Mapping[str, str] | None = None) -> pl.DataFrame:
    """Read a catalogue CSV or parquet file; every column as a string, source names mapped by ``columns``."""
    path = _require_file(Path(path), "catalogue file")
    return _finish_catalogue(_rename(_read_table(path), columns, str(path)), str(path))


# ------------------------------------------------------------------------------------ generic event logs


def read_csv_events(
    path: str | Path,
    catalogue_path: str | Path | None = None,
    columns: Mapping[str, str] | None = None,
    catalogue_columns: Mapping[str, str] | None = None,
    separator: str = ",",
) -> RawData:
    """Read a generic CSV event log with every column as a string (``infer_schema=False``).

    Reading as strings matters: an inferred integer column would turn a stray "abc" into a parse error for
    the whole file, or a float column would hide it as null; as strings, validation rejects just that row.
    ``columns`` renames source columns to the contract names, e.g. ``{"userId": "user_id"}``.
    """
    path = _require_file(Path(path), "events file")
    df = pl.read_csv(path, infer_schema=False, separator=separator)
    events = _finish_events(_rename(df, columns, str(path)), str(path))
    catalogue = read_catalogue(catalogue_path, catalogue_columns) if catalogue_path is not None else None
    return RawData(events, catalogue)


def read_table_events(
    path: str | Path,
    catalogue_path: str | Path | None = None,
    columns: Mapping[str, str] | None = None,
    catalogue_columns: Mapping[str, str] | None = None,
) -> RawData:
    """Read a parquet event log (a file, a directory or a glob); every column is cast to a string.

    Parquet keeps its types, so values arrive typed; they are still rendered as strings so that every format
    reaches validation in the same shape (and validation alone decides what is a bad value).
    """
    path = Path(path)
    if "*" not in str(path):
        _require_file(path, "events file")
    # The casts run inside the scan, file by file: the typed columns are never held whole beside their strings
    # (20M events: a peak of 1.29 GB instead of 1.40 GB for reading, then casting).
    scan = pl.scan_parquet(path)
    strings = scan.select(_string_exprs(scan.collect_schema())).collect()
    events = _finish_events(_rename(strings, columns, str(path)), str(path))
    catalogue = read_catalogue(catalogue_path, catalogue_columns) if catalogue_path is not None else None
    return RawData(events, catalogue)


# ------------------------------------------------------------------------------------------ MovieLens


def _split_dat(lines: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """Split ``::``-separated lines into named string columns (missing fields become null).

    polars' CSV reader only takes a one-character separator; splitting whole lines on the literal ``::``
    also keeps titles that contain a single ``:`` ("Star Wars: Episode IV") in one piece.
    """
    parts = pl.col("line").str.split("::")
    return lines.filter(pl.col("line").str.strip_chars() != "").select(
        [parts.list.get(i, null_on_oob=True).alias(name) for i, name in enumerate(names)]
    )


def _movielens_ratings_file(folder: Path, ratings_file: str | Path | None) -> Path:
    if ratings_file is not None:
        path = Path(ratings_file)
        return _require_file(path if path.is_absolute() else folder / path, "MovieLens ratings file")
    if (folder / "ratings.dat").exists():
        return folder / "ratings.dat"
    candidates = sorted(folder.glob("ratings*.dat"))
    if len(candidates) == 1:
        log.warning("no ratings.dat in %s; reading %s instead", folder, candidates[0].name)
        return candidates[0]
    if not candidates:
        raise FileNotFoundError(
            f"no MovieLens ratings file in {folder}: expected ratings.dat or one ratings*.dat "
            f"(found {sorted(p.name for p in folder.iterdir())})"
        )
    raise ValueError(
        f"several MovieLens ratings files in {folder}: {[p.name for p in candidates]}; choose one with ratings_file="
    )


def read_movielens(folder: str | Path, ratings_file: str | Path | None = None) -> RawData:
    """Read MovieLens-1M ``.dat`` files: ``UserID::MovieID::Rating::Timestamp`` and ``movies.dat``.

    Ratings come from ``ratings.dat`` when present, else from the single ``ratings*.dat`` (a warning names
    it: a partial file must never pass for the full one), else ``ratings_file``. ``value`` = the rating.
    ``movies.dat`` is latin-1 (accented titles), so it is decoded as such and becomes the catalogue:
    item_id = MovieID, title = Title, category = Genres (pipe-separated).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"MovieLens folder not found: {folder}")
    ratings_path = _movielens_ratings_file(folder, ratings_file)
    ratings = _split_dat(pl.read_lines(ratings_path), ["user_id", "item_id", "value", "timestamp"])
    events = _finish_events(ratings, str(ratings_path))

    catalogue = None
    movies_path = folder / "movies.dat"
    if movies_path.exists():
        catalogue = read_movielens_movies(movies_path)
    else:
        log.warning("no movies.dat in %s: reading MovieLens ratings without a catalogue", folder)
    return RawData(events, catalogue)


def read_movielens_movies(path: str | Path) -> pl.DataFrame:
    """``movies.dat`` (latin-1, ``MovieID::Title::Genres``) as a catalogue: item_id, title, category."""
    path = _require_file(Path(path), "MovieLens movies file")
    text = path.read_bytes().decode("latin-1")
    movies = _split_dat(pl.read_lines(text.encode("utf-8")), ["item_id", "title", "category"])
    return _finish_catalogue(movies, str(path))


def read_any_catalogue(path: str | Path) -> pl.DataFrame:
    """A catalogue file of any supported kind: MovieLens ``movies.dat``, else CSV or parquet."""
    path = Path(path)
    return read_movielens_movies(path) if path.suffix.lower() == ".dat" else read_catalogue(path)


# ---------------------------------------------------------------------------------- sequence files


def _explode_sequences(users: pl.Expr, items: pl.Expr, lines: pl.DataFrame, order: pl.Expr) -> pl.DataFrame:
    """One event per (user, item) of list-valued sequences; timestamp = position, row = global order."""
    return (
        lines.select(users.alias("user_id"), items.alias("item_id"), order.alias("_order"))
        .sort("_order", maintain_order=True)
        .with_columns(pl.int_ranges(pl.col("item_id").list.len()).alias("timestamp"))
        .explode("item_id", "timestamp")
        .drop_nulls("item_id")
        .select("user_id", "item_id", pl.col("timestamp").cast(pl.String))
    )


def read_sequence_file(path: str | Path, catalogue_path: str | Path | None = None) -> RawData:
    """Read a one-user-per-line sequence file, ``user item item ...`` (e.g. Amazon ``Beauty.txt``).

    Such files carry no timestamps, only order, so ``timestamp`` is the 0-based position of the item in its
    line: sorting by (timestamp, row) then restores the file's order, which is the time order by convention.
    ``row`` is the global order (line by line, left to right). Blank lines hold no events and are skipped.
    """
    path = _require_file(Path(path), "sequence file")
    tokens = pl.col("line").str.strip_chars().str.replace_all(r"\s+", " ").str.split(" ")
    lines = pl.read_lines(path).with_row_index("_line").filter(pl.col("line").str.strip_chars() != "")
    lines = lines.with_columns(tokens.alias("_tokens"))
    events = _explode_sequences(pl.col("_tokens").list.first(), pl.col("_tokens").list.slice(1), lines, pl.col("_line"))
    catalogue = read_catalogue(catalogue_path) if catalogue_path is not None else None
    return RawData(_finish_events(events, str(path)), catalogue)


# -------------------------------------------------------------------------------------------- RecBole


def _read_atomic(path: Path) -> pl.DataFrame:
    """A RecBole atomic file: tab-separated, header ``name:type``; the type suffix is dropped."""
    df = pl.read_csv(path, separator="\t", infer_schema=False, quote_char=None)
    return df.rename({c: c.split(":", 1)[0] for c in df.columns})


def _read_index(path: Path, name: str) -> pl.DataFrame:
    """``raw_id<TAB>index`` without header (UniSRec ``.item2index`` / ``.user2index``)."""
    return pl.read_csv(
        path,
        separator="\t",
        has_header=False,
        infer_schema=False,
        quote_char=None,
        new_columns=[name, "_idx"],
    )


def _recbole_name(folder: Path, dataset_name: str | None) -> tuple[str, bool]:
    """Dataset name and whether it comes as leave-one-out samples (``.train/.valid/.test.inter``)."""
    if dataset_name is not None:
        if (folder / f"{dataset_name}.train.inter").exists():
            return dataset_name, True
        _require_file(folder / f"{dataset_name}.inter", "RecBole .inter file")
        return dataset_name, False
    splits = sorted(p.name.removesuffix(".train.inter") for p in folder.glob("*.train.inter"))
    plain = sorted(p.stem for p in folder.glob("*.inter") if p.stem.count(".") == 0)
    names = splits or plain
    if len(names) != 1:
        raise ValueError(
            f"cannot tell the RecBole dataset in {folder}: found {names or 'no .inter files'}; pass dataset_name="
        )
    return names[0], bool(splits)


def _rebuild_leave_one_out(folder: Path, name: str) -> pl.DataFrame:
    """Rebuild each user's full sequence from UniSRec leave-one-out samples.

    Each sample is ``user, history, target``; train holds every earlier prefix, longest first. Taking a user's
    train rows in reverse file order, then valid, then test, the first row's history followed by every row's
    target is the whole sequence. Each row's (possibly truncated) history is checked against the rebuilt
    prefix, so a misread file fails loudly instead of producing wrong sequences.
    """
    frames = []
    for rank, split in enumerate(("train", "valid", "test")):
        path = _require_file(folder / f"{name}.{split}.inter", "RecBole split file")
        df = _read_atomic(path)
        if set(df.columns) != {"user_id", "item_id_list", "item_id"}:
            raise ValueError(f"{path}: expected columns user_id, item_id_list, item_id; found {df.columns}")
        line = pl.int_range(pl.len(), dtype=pl.Int64)
        frames.append(
            df.with_columns(pl.lit(rank).alias("_split"), (-line if split == "train" else line).alias("_order"))
        )
    samples = (
        pl.concat(frames)
        .with_columns(
            pl.col("user_id").str.strip_chars(),
            pl.col("item_id").str.strip_chars(),
            pl.col("item_id_list").str.strip_chars().str.split(" ").alias("_history"),
            pl.col("user_id").str.strip_chars().cast(pl.Int64, strict=False).alias("_user_num"),
        )
        .sort("_user_num", "user_id", "_split", "_order", maintain_order=True)
        .with_columns(pl.int_range(pl.len()).over("user_id").alias("_rank"))
    )
    sequences = samples.group_by("user_id", maintain_order=True).agg(
        pl.concat_list(pl.col("_history").first(), pl.col("item_id").implode()).alias("_seq"),
        pl.col("_history").first().list.len().alias("_start"),
    )
    # every sample's history must equal the rebuilt prefix ending just before its target
    check = samples.join(sequences, on="user_id").with_columns(
        (pl.col("_start") + pl.col("_rank")).alias("_k"), pl.col("_history").list.len().alias("_h")
    )
    bad = check.filter(
        (pl.col("_k") < pl.col("_h"))
        | (pl.col("_seq").list.slice(pl.col("_k") - pl.col("_h"), pl.col("_h")) != pl.col("_history"))
    ).height
    if bad:
        raise ValueError(
            f"{folder}/{name}.*.inter: {bad} leave-one-out samples disagree with the rebuilt sequences; "
            "the files are not the train/valid/test samples of one set of sequences"
        )
    return _explode_sequences(pl.col("user_id"), pl.col("_seq"), sequences, pl.int_range(pl.len(), dtype=pl.Int64))


def _map_back(events: pl.DataFrame, index_path: Path, column: str) -> pl.DataFrame:
    """Replace dense indices by raw IDs through ``<name>.<x>2index``; an index it lacks is an error."""
    if not index_path.exists():
        log.warning("%s not found: keeping RecBole indices as %s", index_path, column)
        return events
    mapping = _read_index(index_path, "_raw")
    mapped = events.join(mapping, left_on=column, right_on="_idx", how="left", maintain_order="left")
    unmapped = mapped.filter(pl.col("_raw").is_null()).height
    if unmapped:
        raise ValueError(f"{unmapped} events have a {column} index that {index_path} does not list")
    return mapped.with_columns(pl.col("_raw").alias(column)).drop("_raw")


def _clean_description(expr: pl.Expr) -> pl.Expr:
    """Strip HTML tags and runs of whitespace; no letters or digits at all means no description."""
    text = (
        expr.str.replace_all(r"<[^>]*>", " ")
        .str.replace_all(r"\s+", " ")
        .str.replace_all(r" ([.,;:!?])", "$1")
        .str.strip_chars()
    )
    return pl.when(text.str.contains(r"[[:alnum:]]")).then(text).otherwise(None)


def _recbole_catalogue(folder: Path, name: str) -> pl.DataFrame | None:
    """Catalogue from ``<name>.text`` (+ ``<name>.descriptions.jsonl``) or a RecBole ``<name>.item`` file.

    ``.text`` holds one string ``"<title>. <category path>. <brand>."`` per item: the whole string is kept as
    the title (it is what the item text of the benchmark is), and when it splits cleanly into exactly three
    parts on ``". "`` the parts fill category and brand. The descriptions file, when present, is joined on
    the ASIN: it gives the description (HTML stripped) and fills brand where ``.text`` did not; its
    comma-separated category path is preferred (written ``A > B > C``) because ``.text`` flattens the path
    into one space-joined string.
    """
    text_path, item_path = folder / f"{name}.text", folder / f"{name}.item"
    if text_path.exists():
        raw = _read_atomic(text_path)
        text = pl.col("text").str.strip_chars()
        parts = text.str.strip_chars_end(".").str.split(". ")
        clean = parts.list.len() == 3
        catalogue = raw.select(
            pl.col("item_id").str.strip_chars(),
            text.alias("title"),
            pl.when(clean).then(parts.list.get(1).str.strip_chars()).alias("category"),
            pl.when(clean).then(parts.list.get(2).str.strip_chars()).alias("brand"),
        )
        jsonl = folder / f"{name}.descriptions.jsonl"
        if jsonl.exists():
            extra = pl.read_ndjson(jsonl, infer_schema_length=None).select(
                pl.col("asin").cast(pl.String).alias("item_id"),
                pl.col("brand").cast(pl.String).alias("_brand"),
                pl.col("categories").cast(pl.String).str.replace_all(r"\s*,\s*", " > ").alias("_category"),
                _clean_description(pl.col("description").cast(pl.String)).alias("description"),
            )
            extra = extra.unique("item_id", keep="first", maintain_order=True)
            catalogue = catalogue.join(extra, on="item_id", how="left", maintain_order="left").select(
                "item_id",
                "title",
                "description",
                pl.coalesce(pl.col("_category").replace("", None), "category").alias("category"),
                pl.coalesce("brand", pl.col("_brand").replace("", None)).alias("brand"),
            )
        return _finish_catalogue(catalogue, str(text_path))
    if item_path.exists():
        raw = _read_atomic(item_path).rename({"categories": "category"}, strict=False)
        return _finish_catalogue(raw.select([c for c in CATALOGUE_COLUMNS if c in raw.columns]), str(item_path))
    return None


def read_recbole(path: str | Path, dataset_name: str | None = None) -> RawData:
    """Read RecBole atomic files: UniSRec leave-one-out samples or a plain ``.inter`` file.

    ``path`` is a folder (the dataset is found by its ``*.train.inter`` or single ``*.inter``; pass
    ``dataset_name`` when there are several) or a ``.inter`` file. Leave-one-out samples
    (``<name>.train/.valid/.test.inter``) are rebuilt into full sequences with timestamp = position and
    indices mapped back to raw IDs via ``<name>.item2index`` / ``<name>.user2index``. A plain ``.inter``
    file (``user_id:token item_id:token [rating:float] timestamp:float``) is read as is: ``rating`` becomes
    ``value``; other columns are kept.
    """
    path = Path(path)
    if path.is_file():
        folder, name, split = path.parent, path.name.removesuffix(".inter"), False
    elif path.is_dir():
        folder = path
        name, split = _recbole_name(folder, dataset_name)
    else:
        raise FileNotFoundError(f"RecBole path not found: {path}")

    if split:
        events = _rebuild_leave_one_out(folder, name)
        events = _map_back(events, folder / f"{name}.item2index", "item_id")
        events = _map_back(events, folder / f"{name}.user2index", "user_id")
    else:
        inter = folder / f"{name}.inter"
        events = _read_atomic(_require_file(inter, "RecBole .inter file"))
        if "rating" in events.columns and "value" not in events.columns:
            events = events.rename({"rating": "value"})
    return RawData(_finish_events(events, str(folder / name)), _recbole_catalogue(folder, name))


# ------------------------------------------------------------------------------------------ dispatch


def read_dataset(
    path: str | Path,
    format: str,
    *,
    catalogue_path: str | Path | None = None,
    columns: Mapping[str, str] | None = None,
) -> RawData:
    """Read a dataset in one of :data:`FORMATS`; the one entry point the CLI and pipeline call.

    ``catalogue_path`` and ``columns`` (source -> contract names) apply to the formats that take them:
    ``csv``/``parquet`` take both, ``sequences`` a catalogue only; ``movielens`` and ``recbole`` read their
    catalogue from their own folder.
    """
    fmt = format.strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"unknown dataset format {format!r}; valid formats: {', '.join(FORMATS)}")
    if fmt == "csv":
        return read_csv_events(path, catalogue_path, columns)
    if fmt == "parquet":
        return read_table_events(path, catalogue_path, columns)
    if columns:
        raise ValueError(f"format {fmt!r} has a fixed layout; a column mapping applies to csv and parquet only")
    if fmt == "sequences":
        return read_sequence_file(path, catalogue_path)
    if catalogue_path is not None:
        raise ValueError(f"format {fmt!r} reads its catalogue from its own folder; drop catalogue_path")
    if fmt == "movielens":
        return read_movielens(path)
    return read_recbole(path)
