"""The nightly batch's ad copy: copy for every user's top-k recommendations, written into the bundle.

Copy depends on the item and on the interest drawn from the user's history, not on who the user is, so each
distinct (item, interest) pair is written once and shared by every user it applies to. Generation runs with
the same onnxruntime `CopyWriter` the service uses (same checks, same fallback), so the batch and the live path
cannot drift apart.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from recsys.adcopy.chat_writer import FLOAT_DECODER, ChatCopyWriter
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.interests import shared_interest
from recsys.adcopy.records import ItemRecord, records_from_catalogue
from recsys.adcopy.writer import CopyResult, CopyWriter
from recsys.bundle.layout import ADCOPY_DIR, COPY_CONFIG, COPY_COPIES, COPY_DECODER, COPY_FACTS, COPY_TOKENIZER

COPY_COLUMNS = {
    "user_id": pl.String,
    "item_id": pl.String,
    "headline": pl.String,
    "body": pl.String,
    "source": pl.String,
    "interest": pl.String,
    "reasons": pl.List(pl.String),
}


def write_adcopy_assets(
    staging: Path,
    copy_model_dir: Path | None,
    catalogue: pl.DataFrame,
    histories: Mapping[str, Sequence[str]],
    recommendations: Mapping[str, Sequence[str]],
    console: Console | None = None,
    batch_writer_dir: Path | None = None,
    batch_size: int = 8,
) -> dict:
    """Put the copy model, the catalogue facts and the precomputed copies under `staging/adcopy/`.

    `recommendations` maps a user to the items to write copy for (their top-k); `histories` gives the items
    their interest is drawn from. Without a copy model only the facts are written (the service then answers
    with the grounded template, flagged). With `batch_writer_dir` (a chat writer's folder) the precomputed copy
    comes from that pretrained model (its float graph when the folder has one), `batch_size` prompts per decoder
    batch; the live path keeps the copy model.
    """
    directory = staging / ADCOPY_DIR
    directory.mkdir(parents=True, exist_ok=True)
    records = records_from_catalogue(catalogue)
    facts = CatalogueFacts.from_records(records.values())
    (directory / COPY_FACTS).write_text(json.dumps(facts.to_json()))
    if copy_model_dir is not None:
        for name in (COPY_DECODER, COPY_TOKENIZER, COPY_CONFIG):
            shutil.copy2(Path(copy_model_dir) / name, directory / name)
    write_batch: Callable[[list[tuple[ItemRecord, str | None]]], list[CopyResult]]
    if batch_writer_dir is not None:
        # the batch has the time for the float graph (about twice int8's per item) and its candidates are better:
        # more of them pass the checks and state a fact (the ad-copy benchmark's two fine-tuned rows)
        graph = FLOAT_DECODER if (Path(batch_writer_dir) / FLOAT_DECODER).exists() else COPY_DECODER
        chat_writer = ChatCopyWriter(batch_writer_dir, facts, threads=2, decoder=graph)
        written_by = f"pretrained: {chat_writer.config.get('model') or Path(batch_writer_dir).name}"

        def write_batch(batch: list[tuple[ItemRecord, str | None]]) -> list[CopyResult]:
            return chat_writer.write_many(batch, batch_size)

    elif copy_model_dir is not None:
        writer, written_by = CopyWriter(directory, facts), "copy model"

        def write_batch(batch: list[tuple[ItemRecord, str | None]]) -> list[CopyResult]:
            return [writer.write(record, interest) for record, interest in batch]

    else:
        return {"copies": 0}

    wanted: dict[tuple[str, str | None], list[str]] = {}  # (item, interest) -> users
    for user_id, items in recommendations.items():
        known = [records[i] for i in histories.get(user_id, ()) if i in records]
        for item_id in items:
            if item_id in records:
                interest = shared_interest(records[item_id], known, facts) if known else None
                wanted.setdefault((item_id, interest), []).append(user_id)

    rows: list[dict] = []
    started = time.perf_counter()
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
    with progress:
        task = progress.add_task("ad copy", total=len(wanted))
        keys = list(wanted)
        for start in range(0, len(keys), batch_size):
            batch = [(records[item_id], interest) for item_id, interest in keys[start : start + batch_size]]
            rows += copy_rows(keys[start : start + batch_size], write_batch(batch), wanted)
            progress.advance(task, len(batch))
    seconds = time.perf_counter() - started
    copies = pl.DataFrame(rows, schema=COPY_COLUMNS)
    copies.write_parquet(directory / COPY_COPIES)
    generated = copies.filter(pl.col("source") == "generated").height
    return {
        "copies": copies.height,
        "written_by": written_by,
        "distinct": len(wanted),
        "generated_share": round(generated / max(copies.height, 1), 4),
        "seconds": round(seconds, 1),
        "distinct_per_s": round(len(wanted) / max(seconds, 1e-9), 2),
    }


def copy_rows(
    keys: Sequence[tuple[str, str | None]], results: Sequence[CopyResult], wanted: Mapping[tuple, Sequence[str]]
) -> list[dict]:
    """One row per user a distinct (item, interest) copy applies to."""
    rows = []
    for (item_id, interest), result in zip(keys, results, strict=True):
        for user_id in wanted[(item_id, interest)]:
            rows.append(
                {
                    "user_id": user_id,
                    "item_id": item_id,
                    "headline": result.copy.headline,
                    "body": result.copy.body,
                    "source": result.source,
                    "interest": interest,
                    "reasons": result.reasons,
                }
            )
    return rows
