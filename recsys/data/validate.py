"""Validation: type the raw string columns, send every bad row to a rejects frame with a reason, summarise.

Nothing is dropped silently: every input row ends up in ``events`` or in ``rejects``, and a run whose reject
rate is above a threshold fails with :class:`RejectRateExceeded`. IDs are kept as the source wrote them
(stripped); epoch numbers are seconds, naive datetimes UTC; other source columns are listed as ignored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from recsys.data.importers import REQUIRED_EVENT_COLUMNS, ROW, RawData
from recsys.durable import atomic_write

# a rejected event row gets the first of these that applies, in this order
EVENT_REASONS = (
    "missing_user_id",
    "missing_item_id",
    "bad_timestamp",
    "bad_value",
    "unknown_item",
    "duplicate",
)
CATALOGUE_REASONS = ("missing_item_id", "missing_title", "duplicate")
EVENT_SCHEMA = {
    "user_id": pl.String,
    "item_id": pl.String,
    "timestamp": pl.Int64,
    "event_type": pl.String,
    "value": pl.Float64,
    "row": pl.Int64,
}
CATALOGUE_SCHEMA = {
    "item_id": pl.String,
    "title": pl.String,
    "description": pl.String,
    "category": pl.String,
    "brand": pl.String,
    "price": pl.Float64,
}
# Tried in order; %.f accepts no fraction too, %#z accepts Z, +hh, +hhmm and +hh:mm.
ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)
_MAX_EXACT_FLOAT = 2.0**53  # beyond this a float epoch cannot be an exact second


class RejectRateExceeded(ValueError):
    """Too many event rows were rejected; carries the rejects and the summary for the caller to report."""

    def __init__(
        self,
        message: str,
        *,
        rate: float,
        threshold: float,
        summary: dict[str, Any],
        rejects: pl.DataFrame,
        rejects_path: Path | None,
    ):
        super().__init__(message)
        self.rate = rate
        self.threshold = threshold
        self.summary = summary
        self.rejects = rejects
        self.rejects_path = rejects_path


@dataclass
class Validated:
    """Typed events and catalogue, the rejected rows with a ``reason`` column, and the run summary."""

    events: pl.DataFrame
    catalogue: pl.DataFrame | None
    rejects: pl.DataFrame
    summary: dict[str, Any]
    catalogue_rejects: pl.DataFrame | None = field(default=None)


# ------------------------------------------------------------------------------------------ parsing


def _blank_to_null(expr: pl.Expr) -> pl.Expr:
    """Strip whitespace; an empty string means the value is missing."""
    stripped = expr.str.strip_chars()
    return pl.when(stripped != "").then(stripped)


def parse_timestamp(expr: pl.Expr) -> pl.Expr:
    """Epoch seconds (Int64) from integer or float epoch seconds or ISO-8601 text; null when unparsable.

    Integers are read exactly (a float detour would round 19-digit values); floats are floored to the
    second; ISO datetimes with an offset are converted to UTC, naive ones taken as UTC.
    """
    text = expr.str.strip_chars()
    as_int = text.cast(pl.Int64, strict=False)
    as_float = text.cast(pl.Float64, strict=False)
    float_ok = as_float.is_finite() & (as_float.abs() < _MAX_EXACT_FLOAT)
    from_float = pl.when(float_ok).then(as_float.floor()).cast(pl.Int64, strict=False)
    from_iso = pl.coalesce(
        [text.str.to_datetime(f, strict=False, time_zone="UTC", time_unit="us") for f in ISO_FORMATS]
    ).dt.epoch("s")
    return pl.coalesce(as_int, from_float, from_iso)


def _parse_number(expr: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
    """(parsed Float64 or null, "was present but is not a finite number")."""
    text = _blank_to_null(expr)
    number = text.cast(pl.Float64, strict=False)
    good = number.is_finite().fill_null(False)
    return pl.when(good).then(number), text.is_not_null() & ~good


def _string_or_null(df: pl.DataFrame, name: str) -> pl.Expr:
    return pl.col(name).cast(pl.String) if name in df.columns else pl.lit(None, dtype=pl.String)


def _as_raw_strings(df: pl.DataFrame) -> pl.DataFrame:
    """Every column but ``row`` as a string, and a ``row`` column (frames built by hand may lack it)."""
    if ROW not in df.columns:
        df = df.with_row_index(ROW)
    return df.with_columns(
        [pl.col(c).cast(pl.String) for c in df.columns if c != ROW and df.schema[c] != pl.String]
        + [pl.col(ROW).cast(pl.Int64)]
    )


def _first_reason(checks: list[tuple[str, pl.Expr]]) -> pl.Expr:
    """The name of the first failing check, or null when every check passes."""
    reason = pl.lit(None, dtype=pl.String)
    for name, failed in reversed(checks):
        reason = pl.when(failed).then(pl.lit(name)).otherwise(reason)
    return reason


def _counts(reasons: pl.Series, names: tuple[str, ...]) -> dict[str, int]:
    counts = dict.fromkeys(names, 0)
    for name, n in reasons.value_counts().iter_rows():
        counts[str(name)] = int(n)
    return counts


# ---------------------------------------------------------------------------------------- catalogue


def _validate_catalogue(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Typed catalogue (first row per item_id kept), its rejects, and its summary.

    A bad or negative price becomes null and is counted as ``bad_price``; the row is kept (price is optional).
    """
    missing = [c for c in ("item_id", "title") if c not in raw.columns]
    if missing:
        raise ValueError(
            f"the catalogue lacks column(s) {missing} (found {raw.columns}); every catalogue needs item_id "
            "and title — map the source's names onto them or leave the catalogue out"
        )
    raw = raw.with_columns(pl.all().cast(pl.String))
    price, bad_price = _parse_number(_string_or_null(raw, "price"))
    typed = raw.with_columns(
        _blank_to_null(pl.col("item_id")).alias("_item_id"),
        _blank_to_null(pl.col("title")).alias("_title"),
        pl.when(price >= 0).then(price).alias("_price"),
        (bad_price | (price < 0).fill_null(False)).alias("_bad_price"),
    )
    reason = _first_reason(
        [("missing_item_id", pl.col("_item_id").is_null()), ("missing_title", pl.col("_title").is_null())]
    )
    typed = typed.with_columns(reason.alias("reason"))
    first = pl.col("_item_id").is_first_distinct().over(pl.col("reason").is_null())
    typed = typed.with_columns(
        pl.when(pl.col("reason").is_null() & ~first).then(pl.lit("duplicate")).otherwise("reason").alias("reason")
    )
    kept = typed.filter(pl.col("reason").is_null())
    catalogue = kept.select(
        pl.col("_item_id").alias("item_id"),
        pl.col("_title").alias("title"),
        *[_blank_to_null(_string_or_null(kept, c)).alias(c) for c in ("description", "category", "brand")],
        pl.col("_price").alias("price"),
    ).cast(CATALOGUE_SCHEMA)
    rejects = typed.filter(pl.col("reason").is_not_null()).select(*raw.columns, "reason")
    summary = {
        "input_rows": raw.height,
        "accepted": catalogue.height,
        "rejected": rejects.height,
        "reasons": _counts(rejects["reason"], CATALOGUE_REASONS),
        "bad_price": int(kept["_bad_price"].sum()),
        "ignored_columns": [c for c in raw.columns if c not in CATALOGUE_SCHEMA],
    }
    return catalogue, rejects, summary


def validate_catalogue(raw: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """Validate a catalogue on its own: (typed catalogue, its rejects, its summary).

    For callers that validate events without a catalogue (the nightly job re-validates history that was
    already checked against the catalogue of its day, so an item retired since keeps its past events).
    """
    return _validate_catalogue(raw)


# ------------------------------------------------------------------------------------------- events


def _reject_message(summary: dict[str, Any], threshold: float, rejects_path: Path | None) -> str:
    top = sorted(((n, r) for r, n in summary["reasons"].items() if n), reverse=True)[:3]
    where = (
        f"The rejected rows, each with a reason column, are in {rejects_path}."
        if rejects_path is not None
        else "The rejected rows are in this exception's .rejects frame (no rejects file was written)."
    )
    return (
        f"{summary['reject_rate']:.2%} of {summary['input_rows']:,} event rows were rejected "
        f"({summary['rejected']:,}), above the allowed {threshold:.2%} (max_reject_rate={threshold}). "
        f"Top reasons: {', '.join(f'{r} {n:,}' for n, r in top)}. {where} "
        "Fix the source data (or the column mapping / format), or raise the threshold with "
        "--max-reject-rate if dropping these rows is intended."
    )


def validate(
    raw: RawData,
    max_reject_rate: float = 0.05,
    require_catalogue: bool = False,
    rejects_path: str | Path | None = None,
) -> Validated:
    """Type and check raw events (and catalogue); every input row is either accepted or rejected.

    ``rejects_path``: where to write the rejects (parquet) when the reject rate is exceeded, so the error
    message can point at them; on success the caller writes them (see :func:`recsys.data.prepared`).
    Raises :class:`RejectRateExceeded` when rejected / input rows > ``max_reject_rate``, and ValueError for
    structural problems (missing columns, no rows, a required catalogue absent).
    """
    if not 0.0 <= max_reject_rate <= 1.0:
        raise ValueError(f"max_reject_rate must be between 0 and 1, got {max_reject_rate}")
    events_in = raw.events
    missing = [c for c in REQUIRED_EVENT_COLUMNS if c not in events_in.columns]
    if missing:
        raise ValueError(f"events lack required column(s) {missing}; found {events_in.columns}")
    if events_in.height == 0:
        raise ValueError("the events are empty: there is nothing to validate")
    if require_catalogue and raw.catalogue is None:
        raise ValueError("a catalogue is required (require_catalogue=True) but the dataset has none")

    catalogue = catalogue_rejects = None
    catalogue_summary = None
    if raw.catalogue is not None:
        catalogue, catalogue_rejects, catalogue_summary = _validate_catalogue(raw.catalogue)

    source = _as_raw_strings(events_in).sort(ROW, maintain_order=True)
    value, bad_value = _parse_number(_string_or_null(source, "value"))
    typed = source.with_columns(
        _blank_to_null(pl.col("user_id")).alias("_user_id"),
        _blank_to_null(pl.col("item_id")).alias("_item_id"),
        parse_timestamp(pl.col("timestamp")).alias("_timestamp"),
        _blank_to_null(_string_or_null(source, "event_type")).alias("_event_type"),
        value.alias("_value"),
        bad_value.alias("_bad_value"),
    )
    checks = [
        ("missing_user_id", pl.col("_user_id").is_null()),
        ("missing_item_id", pl.col("_item_id").is_null()),
        ("bad_timestamp", pl.col("_timestamp").is_null()),
        ("bad_value", pl.col("_bad_value")),
    ]
    if catalogue is not None:
        # a catalogue defines the item universe: an event on an item the service cannot show or describe
        # would train a token nothing can be served for
        checks.append(("unknown_item", ~pl.col("_item_id").is_in(catalogue["item_id"].implode())))
    typed = typed.with_columns(_first_reason(checks).alias("reason"))
    # duplicates compare parsed timestamps: "1970-01-01T00:00:01Z" and "1" are the same event
    first = pl.struct("_user_id", "_item_id", "_timestamp").is_first_distinct().over(pl.col("reason").is_null())
    typed = typed.with_columns(
        pl.when(pl.col("reason").is_null() & ~first).then(pl.lit("duplicate")).otherwise("reason").alias("reason")
    )

    events = (
        typed.filter(pl.col("reason").is_null())
        .select(
            pl.col("_user_id").alias("user_id"),
            pl.col("_item_id").alias("item_id"),
            pl.col("_timestamp").alias("timestamp"),
            pl.col("_event_type").alias("event_type"),
            pl.col("_value").alias("value"),
            pl.col(ROW),
        )
        .cast(EVENT_SCHEMA)
    )
    rejects = typed.filter(pl.col("reason").is_not_null()).select(*source.columns, "reason")
    assert events.height + rejects.height == source.height  # the contract; cheap to keep checked

    input_rows = source.height
    summary: dict[str, Any] = {
        "input_rows": input_rows,
        "accepted": events.height,
        "rejected": rejects.height,
        "reject_rate": rejects.height / input_rows,
        "max_reject_rate": max_reject_rate,
        "reasons": _counts(rejects["reason"], EVENT_REASONS),
        "users": events["user_id"].n_unique(),
        "items": events["item_id"].n_unique(),
        "timestamp_min": events["timestamp"].min(),
        "timestamp_max": events["timestamp"].max(),
        "ignored_columns": [c for c in source.columns if c not in EVENT_SCHEMA],
        "catalogue": catalogue_summary,
    }
    if catalogue_summary is not None and catalogue is not None:
        seen = catalogue["item_id"].is_in(events["item_id"].unique().implode())
        catalogue_summary["items_without_events"] = int((~seen).sum())

    if summary["reject_rate"] > max_reject_rate:
        path = Path(rejects_path) if rejects_path is not None else None
        if path is not None:
            atomic_write(path, rejects.write_parquet)
        raise RejectRateExceeded(
            _reject_message(summary, max_reject_rate, path),
            rate=summary["reject_rate"],
            threshold=max_reject_rate,
            summary=summary,
            rejects=rejects,
            rejects_path=path,
        )
    return Validated(events, catalogue, rejects, summary, catalogue_rejects)
