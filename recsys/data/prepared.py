"""The prepared dataset: the directory of validated data that a training run reads.

Layout (all written by :func:`write_prepared`, each file atomically: a temporary file, then ``os.replace``):

- ``events.parquet`` — typed events (user_id, item_id, timestamp, event_type, value, row), original row order;
- ``catalogue.parquet`` — typed catalogue (only when the dataset has one);
- ``rejects.parquet`` — every rejected event row with its ``reason`` (always written, possibly empty), and
  ``catalogue_rejects.parquet`` when there is a catalogue;
- ``vocab.json`` — the :class:`ItemVocab`: every item of the accepted events, in order of first appearance
  when events are sorted by (timestamp, row). Only items with events get a token: a catalogue-only item
  would be an untrained row in the model, and the protocol ranks the items seen in the data. Warm starts grow
  the vocabulary with :meth:`ItemVocab.extended`. The order depends only on the data, so it is deterministic;
- ``summary.json`` — the validation summary plus the file list. It is written last and removed first, so its
  presence marks a complete directory: a crash half-way leaves a directory :func:`load_prepared` refuses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from recsys.data.validate import Validated
from recsys.data.vocab import ItemVocab

FORMAT_VERSION = 1
EVENTS, CATALOGUE, REJECTS, CATALOGUE_REJECTS = (
    "events.parquet",
    "catalogue.parquet",
    "rejects.parquet",
    "catalogue_rejects.parquet",
)
VOCAB, SUMMARY = "vocab.json", "summary.json"


@dataclass
class Prepared:
    """A loaded prepared dataset."""

    events: pl.DataFrame
    catalogue: pl.DataFrame | None
    vocab: ItemVocab
    summary: dict[str, Any]
    path: Path | None = None


def _atomic(path: Path, write: Callable[[Path], None]) -> None:
    """Write through a temporary sibling and rename it into place, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _write_text(path: Path, text: str) -> None:
    _atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _write_parquet(path: Path, df: pl.DataFrame) -> None:
    _atomic(path, lambda tmp: df.write_parquet(tmp))


def vocab_from_events(events: pl.DataFrame) -> ItemVocab:
    """Items in order of first appearance in time (ties by original row): deterministic for the data."""
    order = events.select("item_id", "timestamp", "row").sort("timestamp", "row")
    return ItemVocab(order["item_id"].unique(maintain_order=True).to_list())


def write_prepared(validated: Validated, out_dir: str | Path) -> Path:
    """Write a validated dataset as a prepared directory (see the module docstring); returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY).unlink(missing_ok=True)  # incomplete until the summary is back

    vocab = vocab_from_events(validated.events)
    files = [EVENTS, REJECTS, VOCAB]
    _write_parquet(out / EVENTS, validated.events)
    _write_parquet(out / REJECTS, validated.rejects)
    _write_text(out / VOCAB, json.dumps({"item_ids": vocab.item_ids}))
    for name, frame in ((CATALOGUE, validated.catalogue), (CATALOGUE_REJECTS, validated.catalogue_rejects)):
        if frame is None:
            (out / name).unlink(missing_ok=True)  # never leave a previous run's file behind
        else:
            _write_parquet(out / name, frame)
            files.append(name)

    summary = {
        **validated.summary,
        "format_version": FORMAT_VERSION,
        "has_catalogue": validated.catalogue is not None,
        "vocab_size": len(vocab),
        "files": sorted(files + [SUMMARY]),
    }
    _write_text(out / SUMMARY, json.dumps(summary, indent=2, sort_keys=True, default=str))
    return out


def load_prepared(path: str | Path) -> Prepared:
    """Load a prepared directory; a missing or incomplete one fails with the missing file names."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"prepared dataset directory not found: {root}")
    hint = "prepare the dataset again (write_prepared) into this directory"
    if not (root / SUMMARY).exists():
        raise FileNotFoundError(
            f"prepared dataset {root} is incomplete: {SUMMARY} is missing (it is written last, so the "
            f"preparation did not finish); {hint}"
        )
    summary = json.loads((root / SUMMARY).read_text(encoding="utf-8"))
    needed = [EVENTS, REJECTS, VOCAB] + ([CATALOGUE] if summary.get("has_catalogue") else [])
    missing = [name for name in needed if not (root / name).exists()]
    if missing:
        raise FileNotFoundError(f"prepared dataset {root} is incomplete: missing {', '.join(missing)}; {hint}")
    catalogue = pl.read_parquet(root / CATALOGUE) if summary.get("has_catalogue") else None
    return Prepared(
        events=pl.read_parquet(root / EVENTS),
        catalogue=catalogue,
        vocab=ItemVocab.load(root / VOCAB),
        summary=summary,
        path=root,
    )
