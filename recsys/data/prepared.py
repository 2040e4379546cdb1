"""The prepared dataset: the directory of validated data that a training run reads.

:func:`write_prepared` writes each file atomically: typed events and catalogue, their rejects, ``vocab.json``
and ``summary.json``. The summary is written last and removed first, so its presence marks a complete
directory: a crash half-way leaves one that :func:`load_prepared` refuses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from recsys.data.validate import Validated
from recsys.data.vocab import ItemVocab
from recsys.durable import atomic_write, atomic_write_text

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


def vocab_from_events(events: pl.DataFrame) -> ItemVocab:
    """Items in order of first appearance in time (ties by original row): deterministic for the data.

    Only items with events get a token: a catalogue-only item would be an untrained row in the model.
    """
    order = events.select("item_id", "timestamp", "row").sort("timestamp", "row")
    return ItemVocab(order["item_id"].unique(maintain_order=True).to_list())


def write_prepared(validated: Validated, out_dir: str | Path) -> Path:
    """Write a validated dataset as a prepared directory, the summary last; returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / SUMMARY).unlink(missing_ok=True)  # incomplete until the summary is back

    vocab = vocab_from_events(validated.events)
    files = [EVENTS, REJECTS, VOCAB]
    atomic_write(out / EVENTS, validated.events.write_parquet)
    atomic_write(out / REJECTS, validated.rejects.write_parquet)
    atomic_write_text(out / VOCAB, json.dumps({"item_ids": vocab.item_ids}))
    for name, frame in ((CATALOGUE, validated.catalogue), (CATALOGUE_REJECTS, validated.catalogue_rejects)):
        if frame is None:
            (out / name).unlink(missing_ok=True)  # never leave a previous run's file behind
        else:
            atomic_write(out / name, frame.write_parquet)
            files.append(name)

    summary = {
        **validated.summary,
        "format_version": FORMAT_VERSION,
        "has_catalogue": validated.catalogue is not None,
        "vocab_size": len(vocab),
        "files": sorted(files + [SUMMARY]),
    }
    atomic_write_text(out / SUMMARY, json.dumps(summary, indent=2, sort_keys=True, default=str))
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
