"""Ad copy from a bundle: precomputed copy when the nightly wrote it, else live generation under a time budget.

A bundle's ad-copy assets live in `adcopy/`: the ONNX decoder and tokenizer, `facts.json` (the catalogue's
brands and product nouns, what grounding checks against) and `copies.parquet` (the batch's copy for each
user's top recommendations). The item records come from the bundle's catalogue.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recsys.adcopy.checks import MAX_HEADLINE, Copy, check_copy
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.interests import shared_interest
from recsys.adcopy.records import ItemRecord, records_from_catalogue
from recsys.adcopy.template import template_copy
from recsys.adcopy.writer import CopyWriter
from recsys.bundle.layout import ADCOPY_DIR, COPY_COPIES, COPY_DECODER, COPY_FACTS


class NoRecord(LookupError):
    """The item has no catalogue record: there is nothing to write copy from."""


@dataclass
class AdCopyAnswer:
    item_id: str
    copy: Copy
    source: str  # "precomputed" | "generated" | "fallback"
    interest: str | None
    reasons: list[str] = field(default_factory=list)
    generation_ms: float = 0.0
    tokens: int = 0
    finished: bool = True
    grounded: bool = True
    claims_free: bool = True
    within_length: bool = True
    generated: bool = True  # a model wrote the text (now or in the nightly batch); False for any fallback


class AdCopyAssets:
    def __init__(self, bundle_path: Path, catalogue: pl.DataFrame, threads: int = 1) -> None:
        directory = bundle_path / ADCOPY_DIR
        self.facts = CatalogueFacts.from_json(json.loads((directory / COPY_FACTS).read_text()))
        self.records: dict[str, ItemRecord] = records_from_catalogue(catalogue)
        self.writer = CopyWriter(directory, self.facts, threads) if (directory / COPY_DECODER).exists() else None
        self.copies: dict[tuple[str, str], dict] = {}
        if (directory / COPY_COPIES).exists():
            for row in pl.read_parquet(directory / COPY_COPIES).iter_rows(named=True):
                self.copies[(row["user_id"], row["item_id"])] = row

    def record(self, item_id: str) -> ItemRecord:
        record = self.records.get(item_id)
        if record is None:
            raise NoRecord(item_id)
        return record

    def interest(self, record: ItemRecord, history: Sequence[str]) -> str | None:
        known = [self.records[i] for i in history if i in self.records]
        return shared_interest(record, known, self.facts) if known else None

    def _answer(self, record: ItemRecord, copy: Copy, source: str, interest: str | None, max_body: int, **kw):
        check = check_copy(copy, record, self.facts, MAX_HEADLINE, max_body)
        return AdCopyAnswer(
            record.item_id,
            copy,
            source,
            interest,
            grounded=not check.unsupported,
            claims_free=not check.claims,
            within_length=not check.too_long,
            generated=source == "generated",
            **kw,
        )

    def precomputed(self, user_id: str | None, item_id: str, max_body: int) -> AdCopyAnswer | None:
        row = self.copies.get((user_id, item_id)) if user_id is not None else None
        if row is None or len(row["body"]) > max_body:
            return None
        # No re-check per request: the batch stored only copy that passed check_copy with the full limits, or
        # the template (grounded by construction), and the body fits this request's limit (tested just above).
        reasons = ["written by the nightly batch", *(row.get("reasons") or [])]
        copy, generated = Copy(row["headline"], row["body"]), row["source"] == "generated"
        return AdCopyAnswer(item_id, copy, "precomputed", row["interest"], reasons, generated=generated)

    def write(self, item_id: str, history: Sequence[str], max_body: int, budget_s: float) -> AdCopyAnswer:
        """Live copy: generated and checked within the budget, or the grounded template, flagged."""
        record = self.record(item_id)
        interest = self.interest(record, history)
        if self.writer is None:
            copy = template_copy(record, interest, MAX_HEADLINE, max_body)
            return self._answer(record, copy, "fallback", interest, max_body, reasons=["bundle has no copy model"])
        started = time.perf_counter()
        result = self.writer.write(record, interest, max_body=max_body, deadline_s=budget_s)
        reasons = list(result.reasons)
        if not history:
            reasons.append("no history: copy is not personalised")
        elif interest is None:
            reasons.append("the history shares no category or brand with this item: copy is not personalised")
        return self._answer(
            record,
            result.copy,
            result.source,
            interest,
            max_body,
            reasons=reasons,
            generation_ms=(time.perf_counter() - started) * 1000,
            tokens=result.tokens,
            finished=result.finished,
        )
