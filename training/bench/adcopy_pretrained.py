"""The pretrained phase of `recsys benchmark adcopy`: SmolLM2 zero-shot and after rejection-sampling
fine-tuning (float and int8), scored beside the template, the extractive rule and the small model on the same
held-out items, with fluency judged by the base model, a blind side-by-side file and live-path timings.

Protocol additions (beside `training/bench/adcopy.py`'s):
- Every system's final copy (generated, or the fallback where a writer had none to ship) is scored by
  `training.adcopy.evaluation.score_system`: ROUGE-L and BLEU against the description's opening, repeated word
  trigrams, informative (a number or two description words beyond the name, no boilerplate), boilerplate, and
  unsupported facts left after the checks.
- Fluency: corpus perplexity of each system's copies (`headline. body`, read alone) under the base model's
  float graph before fine-tuning. The zero-shot row is judged by its own writer, so it is flattered.
- Pretrained writers decode in batches of `batch_size` left-padded prompts, `candidates` per prompt (the first
  greedy, the rest sampled), at most 80 new tokens, and ship, as the nightly batch does, of the informative
  candidates that pass the checks and the record's own informative sentences (`recsys.adcopy.extractive`) the
  one that reads most naturally to the writer (`ChatCopyWriter.most_readable`: its mean negative log-likelihood
  read alone, plus a penalty per unit of repeated-trigram share); with none, a passing candidate, else the
  template. Each pretrained row reports its fallback rate, the part of it that was the record's sentences, and
  the share of items whose copy the model wrote and is informative.
- The repeat penalty is chosen on validation items (training items the fine-tune never saw, with a buyer), not
  on the held-out ones: the fine-tuned float writer drafts their candidates once, each penalty of
  `REPEAT_PENALTIES` chooses from them, and the one with the lowest judged perplexity whose repeated-trigram
  rate stays below every validation baseline's (the extractive rule's and the small model's) is kept (none
  qualifying: no penalty, a repeating copy only when nothing else informs). It is written into the fine-tuned
  writer's `chat.json`, so the nightly batch ships by the same rule, and every pretrained row here uses it.
- Live: the fine-tuned int8 writer at batch 1 (one greedy candidate) with a 1 s budget, in process, on the
  first `live_items` held-out items: wall per copy (p50, p99), ms per decoding step, prompt (prefill) ms, share
  finished within the budget. The service keeps the small model live unless these meet p99 <= 1 s and >= 95%
  within budget.
"""

from __future__ import annotations

import hashlib
import json
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recsys.adcopy.chat_writer import CHAT_CONFIG, FLOAT_DECODER, ChatCopyWriter
from recsys.adcopy.checks import Copy, as_text
from recsys.adcopy.extractive import EXTRACTIVE_FALLBACK
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.quality import copy_quality
from recsys.adcopy.records import ItemRecord
from recsys.adcopy.writer import CopyResult
from recsys.runinfo import now_iso
from training.adcopy.evaluation import perplexity, score_system, write_side_by_side
from training.adcopy.pretrained import PretrainedCopyConfig, train_pretrained_writer

LIVE_BUDGET_S = 1.0
# nats per token per unit of repeated-trigram share; None: a repeating copy only when no informative one does not
REPEAT_PENALTIES: tuple[float | None, ...] = (0.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, None)
SIDE_BY_SIDE_ITEMS = 40


def _percentile(values: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(values), q)), 1)


def live_timings(writer: ChatCopyWriter, pairs: Sequence[tuple[ItemRecord, str | None]]) -> dict[str, Any]:
    """Batch-1 copies under the live budget: wall per copy, per decoding step, prefill, share within budget."""
    walls, per_step, prefill, within = [], [], [], []
    writer.write(*pairs[0], n=1)  # warm-up: onnxruntime plans its kernels on the first call
    for record, interest in pairs:
        result = writer.write(record, interest, n=1, deadline_s=LIVE_BUDGET_S)
        walls.append(result.generate_ms)
        within.append(result.finished)
        generation = writer.last_generation
        if generation is not None:
            prefill.append(generation.prompt_ms)
            if generation.step_ms:
                per_step.append(generation.step_ms)
    fits = _percentile(walls, 99) <= 1000 * LIVE_BUDGET_S and statistics.fmean(within) >= 0.95
    return {
        "requests": len(pairs),
        "budget_ms": 1000 * LIVE_BUDGET_S,
        "p50_ms": _percentile(walls, 50),
        "p99_ms": _percentile(walls, 99),
        "ms_per_token_p50": round(statistics.median(per_step), 2) if per_step else None,
        "prefill_ms_p50": _percentile(prefill, 50) if prefill else None,
        "in_budget_rate": round(statistics.fmean(within), 4),
        "meets_live_aims": fits,
    }


def source_shares(results: Sequence[CopyResult], records: Sequence[ItemRecord]) -> dict[str, float]:
    """Where a system's final copies came from: any fallback, of which the record's own sentences (the rest is the
    template), and the share of items whose copy is generated and informative (the writer's own part)."""
    extractive = [r.source == "fallback" and EXTRACTIVE_FALLBACK in r.reasons for r in results]
    own = [
        r.source == "generated" and copy_quality(r.copy, record).informative
        for r, record in zip(results, records, strict=True)
    ]
    return {
        "fallback_rate": round(statistics.fmean(r.source == "fallback" for r in results), 4),
        "extractive_fallback_rate": round(statistics.fmean(extractive), 4),
        "generated_informative_rate": round(statistics.fmean(own), 4),
    }


def repeat_rate(copies: Sequence[Copy], records: Sequence[ItemRecord]) -> float:
    return statistics.fmean(copy_quality(c, r).repeated_ngram_rate for c, r in zip(copies, records, strict=True))


def choose_repeat_penalty(
    writer: ChatCopyWriter,
    judge: ChatCopyWriter,
    pairs: Sequence[tuple[ItemRecord, str | None]],
    baselines: dict[str, Sequence[Copy]],
    batch_size: int,
    candidates: int,
) -> dict[str, Any]:
    """The repeat penalty for `writer`, chosen on validation `pairs` (see the module docstring) and set on it;
    with the grid's perplexity and repeated-trigram rate per penalty, and the limit (the lowest baseline rate)."""
    if not pairs:
        writer.repeat_penalty = None
        return {"chosen": None, "items": 0, "grid": []}
    records = [record for record, _ in pairs]
    rates = {name: repeat_rate(copies, records) for name, copies in baselines.items()}
    limit = min(rates.values())
    drafts = writer.draft_many(pairs, batch_size, n=candidates)
    grid = []
    for penalty in REPEAT_PENALTIES:
        writer.repeat_penalty = penalty
        copies = [result.copy for result in writer.finish(pairs, drafts)]
        grid.append(
            {
                "repeat_penalty": penalty,
                "perplexity": round(perplexity(judge, [as_text(c) for c in copies]), 2),
                "repeat_ngram_rate": round(repeat_rate(copies, records), 4),
            }
        )
    within = [row for row in grid if row["repeat_ngram_rate"] < limit]
    writer.repeat_penalty = min(within, key=lambda row: row["perplexity"])["repeat_penalty"] if within else None
    return {
        "chosen": writer.repeat_penalty,
        "items": len(pairs),
        "repeat_limit": round(limit, 4),
        "baselines": {name: round(rate, 4) for name, rate in rates.items()},
        "grid": grid,
    }


def record_repeat_penalty(directory: Path, penalty: float | None) -> None:
    """Write the chosen penalty into a chat writer's `chat.json`, where the nightly batch's writer reads it."""
    config_path = Path(directory) / CHAT_CONFIG
    config = json.loads(config_path.read_text())
    config["repeat_penalty"] = penalty
    config_path.write_text(json.dumps(config, indent=1) + "\n")


def items_sha256(records: Sequence[ItemRecord]) -> str:
    """A fingerprint of the items a model was trained on, saved with its stats."""
    return hashlib.sha256("\n".join(sorted(r.item_id for r in records)).encode()).hexdigest()


def reusable_stats(stats_file: Path, train_records: Sequence[ItemRecord], flag: str) -> dict[str, Any] | None:
    """The stats a previous run saved beside its model, when there are some; refused (ValueError) when that
    model was trained on other items or its stats do not say on which, because the held-out items must stay
    unseen. `flag` names the option that asked for the reuse, for the message."""
    if not stats_file.exists():
        return None
    saved = json.loads(stats_file.read_text())
    if saved.get("train_items_sha256") != items_sha256(train_records):
        raise ValueError(
            f"the model beside {stats_file} was trained on other items (another --eval-share or seed?) or its stats"
            f" do not say which: rerun without {flag}"
        )
    return saved


def trained_writer(
    model: Any,
    tokenizer: Any,
    train_records: Sequence[ItemRecord],
    facts: CatalogueFacts,
    work_dir: Path,
    config: PretrainedCopyConfig,
    model_name: str,
    reuse: bool,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """`train_pretrained_writer`'s stats, saved beside its graphs as `trained.json`; with `reuse`, the saved ones
    when they were trained on the same items (`reusable_stats`)."""
    stats_file = Path(work_dir) / "trained.json"
    if reuse and (saved := reusable_stats(stats_file, train_records, "--reuse-pretrained")) is not None:
        log(f"reusing the pretrained writer in {work_dir} (trained {saved.get('date')})")
        return saved
    stats_file.unlink(missing_ok=True)  # a retrain cut short must not leave old stats over half-written graphs
    trained = train_pretrained_writer(model, tokenizer, train_records, facts, work_dir, config, model_name, log)
    trained = {**trained, "date": now_iso(), "train_items_sha256": items_sha256(train_records)}
    stats_file.write_text(json.dumps(trained))
    return trained


def pretrained_systems(
    *,
    model: Any,
    tokenizer: Any,
    model_name: str,
    train_records: Sequence[ItemRecord],
    eval_pairs: Sequence[tuple[ItemRecord, str | None]],
    references: Sequence[str],
    baseline_copies: dict[str, Sequence[Copy]],
    validation_pairs: Sequence[tuple[ItemRecord, str | None]],
    validation_baselines: dict[str, Sequence[Copy]],
    facts: CatalogueFacts,
    work_dir: Path,
    results_dir: Path,
    config: PretrainedCopyConfig,
    provenance: dict[str, str],
    live_items: int = 100,
    reuse: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train the pretrained writer, write copy for `eval_pairs` with each pretrained system, and score every
    system (`baseline_copies` are the others', in `eval_pairs` order). The repeat penalty is chosen first, on
    `validation_pairs` (unseen training items; `validation_baselines` in their order) with the fine-tuned float
    writer, and used by every pretrained writer. Returns the document's additions.
    `reuse`: score the writer a previous run trained in `work_dir` on the same training items (no harvest, no
    fine-tuning), so a change to how copy is chosen is measured on the same graphs in a fraction of the time."""
    trained = trained_writer(model, tokenizer, train_records, facts, work_dir, config, model_name, reuse, log)
    base_dir, tuned_dir = Path(trained["base_dir"]), Path(trained["tuned_dir"])
    writers = {
        "pretrained_zero_shot": ChatCopyWriter(base_dir, facts, threads=2, decoder=FLOAT_DECODER),
        "pretrained_finetuned": ChatCopyWriter(tuned_dir, facts, threads=2, decoder=FLOAT_DECODER),
        "pretrained_finetuned_quantised": ChatCopyWriter(tuned_dir, facts, threads=2),
    }
    judge = writers["pretrained_zero_shot"]  # the base model before fine-tuning, float
    log(f"choosing the repeat penalty on {len(validation_pairs)} validation items")
    selection = choose_repeat_penalty(
        writers["pretrained_finetuned"],
        judge,
        validation_pairs,
        validation_baselines,
        config.batch_size,
        config.candidates,
    )
    log(f"repeat penalty: {json.dumps(selection)}")
    record_repeat_penalty(tuned_dir, selection["chosen"])
    for writer in writers.values():
        writer.repeat_penalty = selection["chosen"]
    results: dict[str, list[CopyResult]] = {}
    for name, writer in writers.items():
        log(f"writing held-out copy: {name}")
        results[name] = writer.write_many(list(eval_pairs), config.batch_size, n=config.candidates)
    copies = {**baseline_copies, **{name: [r.copy for r in rs] for name, rs in results.items()}}
    records = [record for record, _ in eval_pairs]
    systems = {}
    for name, system_copies in copies.items():
        systems[name] = {
            **score_system(system_copies, records, references, facts),
            "perplexity": round(perplexity(judge, [as_text(c) for c in system_copies]), 2),
        }
        if name in results:
            systems[name].update(source_shares(results[name], records))

    order = sorted(range(len(records)), key=lambda i: records[i].item_id)
    chosen = order[:SIDE_BY_SIDE_ITEMS]
    side_by_side = results_dir / "adcopy-side-by-side.md"
    key = results_dir / "adcopy-side-by-side-key.json"
    write_side_by_side(
        side_by_side,
        key,
        [records[i] for i in chosen],
        {
            "small_model": [copies["small_model"][i] for i in chosen],
            "pretrained_finetuned": [copies["pretrained_finetuned"][i] for i in chosen],  # what the batch writes
        },
        provenance,
    )
    live = live_timings(writers["pretrained_finetuned_quantised"], [eval_pairs[i] for i in order[:live_items]])
    examples = [
        {
            "item_id": records[i].item_id,
            "name": records[i].name,
            **{name: {"headline": copies[name][i].headline, "body": copies[name][i].body} for name in copies},
        }
        for i in order[:3]
    ]
    return {
        "systems": systems,
        "pretrained": {key: value for key, value in trained.items() if key not in ("base_dir", "tuned_dir")},
        "repeat_penalty": selection,
        "pretrained_live": {"model": f"{model_name} fine-tuned, int8", **live},
        "side_by_side": {"file": str(side_by_side.name), "key": str(key.name), "items": len(chosen)},
        "examples_first_three": examples,
    }
