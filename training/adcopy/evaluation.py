"""Scoring ad copy the same way for every system, and the side-by-side file a person reads.

One function scores any system's copies on the same held-out items (template, extractive rule, the small
model, a pretrained model zero-shot or fine-tuned), so a table of systems compares like with like:
ROUGE-L and BLEU against the description's opening, the reading-quality measures of
`recsys.adcopy.quality` (repeated n-grams, informative, boilerplate) and unsupported facts left after the
checks.

The side-by-side file shows two systems' copies per item in an order drawn per item, with the key (which
column is which system) in a separate file, so a reader judges the copy without knowing its source.
"""

from __future__ import annotations

import json
import random
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import sacrebleu
from rouge_score import rouge_scorer

from recsys.adcopy.chat_writer import ChatCopyWriter
from recsys.adcopy.checks import Copy, as_text
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.grounding import unsupported_facts
from recsys.adcopy.quality import copy_quality
from recsys.adcopy.records import ItemRecord

__all__ = ["as_text", "perplexity", "score_system", "write_side_by_side"]

_ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def perplexity(judge: ChatCopyWriter, texts: Sequence[str], batch_size: int = 16) -> float:
    """Fluency: the corpus perplexity of `texts` under the judge's language model, each text read on its own,
    exp(total negative log-likelihood / tokens predicted). The judge must be a model that did not write the
    texts (the base model before fine-tuning), or it rewards its own habits."""
    nlls = [nll for nll in judge.reading_nlls(texts, batch_size) if len(nll)]
    if not nlls:
        raise ValueError("no text of two tokens or more to score")
    nll, predicted = sum(float(x.sum()) for x in nlls), sum(len(x) for x in nlls)
    return float(np.exp(nll / predicted))


def score_system(
    copies: Sequence[Copy], records: Sequence[ItemRecord], references: Sequence[str], facts: CatalogueFacts
) -> dict[str, float | int]:
    """One system's copies for the held-out items (same order as `records` and `references`), scored."""
    if not (len(copies) == len(records) == len(references)) or not copies:
        raise ValueError(
            f"need one copy, record and reference per item; got {len(copies)}, {len(records)}, {len(references)}"
        )
    texts = [as_text(copy) for copy in copies]
    quality = [copy_quality(copy, record) for copy, record in zip(copies, records, strict=True)]

    def mean(values: Sequence[float | bool]) -> float:
        return round(statistics.fmean(values), 4)

    return {
        "items": len(copies),
        "rougeL": mean(
            [_ROUGE.score(ref, text)["rougeL"].fmeasure for ref, text in zip(references, texts, strict=True)]
        ),
        "bleu": round(sacrebleu.corpus_bleu(texts, [list(references)]).score, 3),
        "repeat_ngram_rate": mean([q.repeated_ngram_rate for q in quality]),
        "informative_rate": mean([q.informative for q in quality]),
        "boilerplate_rate": mean([bool(q.boilerplate) for q in quality]),
        "unsupported_after_checks": mean(
            [bool(unsupported_facts(text, record, facts)) for text, record in zip(texts, records, strict=True)]
        ),
    }


def write_side_by_side(
    path: Path,
    key_path: Path,
    records: Sequence[ItemRecord],
    systems: dict[str, Sequence[Copy]],
    provenance: dict[str, str],
    seed: int = 0,
) -> None:
    """A markdown file with each item's record and its copies as "A" and "B" in an order drawn per item, and
    a JSON key beside it: `provenance` (the run's date, hardware and command, as every result records) and
    `items`, {item_id: {"A": system, "B": system}}."""
    missing = [field for field in ("date", "hardware", "command") if not provenance.get(field)]
    if missing:
        raise ValueError(f"the side-by-side key needs the run's {', '.join(missing)}")
    if len(systems) != 2 or any(len(copies) != len(records) for copies in systems.values()):
        raise ValueError("need exactly two systems, each with one copy per record")
    rng = random.Random(seed)
    names = list(systems)
    lines = [
        "# Ad copy side by side",
        "",
        f"{len(records)} held-out items; for each, two systems' copies as A and B in an order drawn per item. "
        f"Which is which: `{key_path.name}` (read it after judging).",
        "",
    ]
    key: dict[str, dict[str, str]] = {}
    for n, record in enumerate(records):
        order = rng.sample(names, 2)
        key[record.item_id] = {"A": order[0], "B": order[1]}
        lines += [
            f"## {n + 1}. {record.name} ({record.item_id})",
            f"- brand: {record.brand or '—'} | category: {' > '.join(record.categories) or '—'}"
            + (f" | price: {record.price_text}" if record.price_text else ""),
            f"- description: {(record.description or '—')[:300]}",
        ]
        for label, system in zip("AB", order, strict=True):
            copy = systems[system][n]
            lines.append(f"- **{label}**: **{copy.headline}** — {copy.body}")
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    key_path.write_text(json.dumps({**provenance, "items": key}, indent=1) + "\n")
