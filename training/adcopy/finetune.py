"""Fine-tune the ad-copy model on catalogue text, and export it for onnxruntime.

Reads top to bottom: catalogue records -> training targets (headline = the product name cut to fit; body = a hook
naming the interest, when there is one, then the record's own description sentences that pass the claims filter)
-> a byte-level BPE tokenizer trained on the training items' text only -> AdamW with warmup + cosine decay,
weight decay, dropout, loss on the copy tokens only, early stopping on held-out items' loss -> ONNX decoder
with its key/value cache as inputs and outputs.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from recsys.adcopy.checks import MAX_HEADLINE, Copy
from recsys.adcopy.extractive import body_from
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.prompt import (
    EOS,
    HOOKS,
    PAD,
    SPECIAL_TOKENS,
    build_prompt,
    build_target,
    clean_sentences,
    prompt_description,
    shorten,
)
from recsys.adcopy.records import ItemRecord
from recsys.bundle.layout import COPY_DECODER, COPY_TOKENIZER
from training.adcopy.model import CopyModel, CopyModelConfig, export_decoder


@dataclass
class CopyTrainConfig:
    epochs: int = 30
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.1
    warmup_ratio: float = 0.05
    grad_clip: float = 1.0
    patience: int = 3  # evaluations without a better held-out loss before stopping
    variants_per_item: int = 2  # examples per item: different interests (or none) and hooks
    interest_prob: float = 0.7
    valid_share: float = 0.05
    max_minutes: float = 10.0
    seed: int = 0
    vocab_size: int = 4096
    model: CopyModelConfig = field(default_factory=CopyModelConfig)


# ---------------------------------------------------------------- targets


def interest_options(record: ItemRecord, facts: CatalogueFacts) -> list[str]:
    """Phrases of the record that can be an interest: its specific category parts and its brand."""
    options = [c for c in record.categories if facts.category_share.get(c.casefold(), 1.0) <= 0.3]
    return options + ([record.brand] if record.brand else [])


def training_copy(record: ItemRecord, interest: str | None, rng: np.random.Generator) -> Copy | None:
    """Headline: the name cut to fit. Body: a hook for the interest, then the clean sentences of the part of
    the description the prompt shows (so the body only says what the model could read)."""
    sentences = clean_sentences(prompt_description(record))
    if not sentences:
        return None
    hook = HOOKS[rng.integers(len(HOOKS))].format(interest=interest) if interest else ""
    return Copy(shorten(record.name, MAX_HEADLINE), body_from(hook, sentences))


def examples_for(
    records: Iterable[ItemRecord], facts: CatalogueFacts, config: CopyTrainConfig, rng: np.random.Generator
) -> list[tuple[str, str]]:
    """(prompt, target) pairs: a few variants per item, with and without an interest."""
    pairs = []
    for record in records:
        options = interest_options(record, facts)
        for _ in range(config.variants_per_item):
            interest = None
            if options and rng.random() < config.interest_prob:
                interest = options[rng.integers(len(options))]
            copy = training_copy(record, interest, rng)
            if copy is not None:
                pairs.append((build_prompt(record, interest), build_target(copy)))
    return pairs


def split_items(item_ids: Iterable[str], share: float, salt: str) -> tuple[list[str], list[str]]:
    """A stable split by hashed item ID: (kept, held out)."""
    kept, held = [], []
    for item_id in item_ids:
        digest = int(hashlib.sha256(f"{salt}:{item_id}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        (held if digest < share else kept).append(item_id)
    return kept, held


HELD_OUT_SALT = "adcopy-eval"  # every ad-copy evaluation holds out the same items


def held_out_text_items(records: dict[str, ItemRecord], share: float) -> tuple[list[str], list[str]]:
    """(items with usable description text, the held-out share of them) — the ad-copy evaluations' split."""
    with_text = [i for i, r in records.items() if clean_sentences(r.description)]
    return with_text, split_items(with_text, share, HELD_OUT_SALT)[1]


# ---------------------------------------------------------------- tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def encode_pairs(tokenizer: Tokenizer, pairs: Sequence[tuple[str, str]], block: int) -> list[tuple[np.ndarray, int]]:
    """Token IDs of prompt + target, cut to the block, with where the target starts."""
    prompts = tokenizer.encode_batch([p for p, _ in pairs])
    targets = tokenizer.encode_batch([t for _, t in pairs])
    encoded = []
    for prompt, target in zip(prompts, targets, strict=True):
        ids = np.asarray(prompt.ids + target.ids, dtype=np.int64)[:block]
        if len(prompt.ids) < len(ids):
            encoded.append((ids, len(prompt.ids)))
    return encoded


# ---------------------------------------------------------------- training


def _batches(examples: list[tuple[np.ndarray, int]], batch_size: int, rng: np.random.Generator, pad_id: int):
    """Length-bucketed batches (sorted by length, then shuffled batch order): little padding."""
    order = np.argsort([len(ids) for ids, _ in examples], kind="stable")
    groups = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    for g in rng.permutation(len(groups)):
        rows = [examples[i] for i in groups[g]]
        width = max(len(ids) for ids, _ in rows)
        ids = np.full((len(rows), width), pad_id, dtype=np.int64)
        labels = np.full((len(rows), width), -100, dtype=np.int64)
        for r, (seq, start) in enumerate(rows):
            ids[r, : len(seq)] = seq
            labels[r, start - 1 : len(seq) - 1] = seq[start:]  # position t predicts token t + 1
        yield torch.from_numpy(ids), torch.from_numpy(labels)


def _loss(model: CopyModel, ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    hidden, weight = model.hidden_and_weight(ids)
    keep = labels != -100
    return F.cross_entropy(hidden[keep] @ weight.T, labels[keep])


@torch.no_grad()
def held_out_loss(model: CopyModel, examples: list[tuple[np.ndarray, int]], pad_id: int) -> float:
    model.eval()
    total, count = 0.0, 0
    for ids, labels in _batches(examples, 64, np.random.default_rng(0), pad_id):
        n = int((labels != -100).sum())
        total += float(_loss(model, ids, labels)) * n
        count += n
    model.train()
    return total / max(count, 1)


@dataclass
class CopyTrainResult:
    model: CopyModel
    tokenizer: Tokenizer
    history: list[dict]
    stats: dict


def fine_tune_copy(
    records: Sequence[ItemRecord],
    facts: CatalogueFacts,
    config: CopyTrainConfig,
    log: Callable[[str], None] = print,
) -> CopyTrainResult:
    """Train the copy model on these records (the caller has already removed any evaluation items)."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    train_ids, valid_ids = split_items([r.item_id for r in records], config.valid_share, f"valid{config.seed}")
    by_id = {r.item_id: r for r in records}
    train_pairs = examples_for([by_id[i] for i in train_ids], facts, config, rng)
    valid_pairs = examples_for([by_id[i] for i in valid_ids], facts, config, rng)
    tokenizer = train_tokenizer((p + t for p, t in train_pairs), config.vocab_size)
    pad_id = tokenizer.token_to_id(PAD)
    model_config = CopyModelConfig(**{**asdict(config.model), "vocab_size": tokenizer.get_vocab_size()})
    train = encode_pairs(tokenizer, train_pairs, model_config.block_size)
    valid = encode_pairs(tokenizer, valid_pairs, model_config.block_size)
    model = CopyModel(model_config)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.98),
    )
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    warmup = max(1, int(config.warmup_ratio * total_steps))

    def lr_at(step: int) -> float:
        if step < warmup:
            return config.lr * (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return config.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))

    log(
        f"copy model: {sum(p.numel() for p in model.parameters()):,} parameters, vocab {model_config.vocab_size}, "
        f"{len(train)} training / {len(valid)} held-out examples from {len(train_ids)} / {len(valid_ids)} items"
    )
    started, step, best, best_state, stale, history, tokens = time.perf_counter(), 0, math.inf, None, 0, [], 0
    model.train()
    for epoch in range(1, config.epochs + 1):
        for ids, labels in _batches(train, config.batch_size, rng, pad_id):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            loss = _loss(model, ids, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            tokens += int((ids != pad_id).sum())
        valid_loss = held_out_loss(model, valid, pad_id)
        elapsed = time.perf_counter() - started
        history.append({"epoch": epoch, "train_loss": round(loss.item(), 4), "valid_loss": round(valid_loss, 4)})
        log(f"epoch {epoch}: train loss {loss.item():.3f}, held-out loss {valid_loss:.3f}, {elapsed:.0f} s")
        if valid_loss < best - 1e-4:
            best, stale = valid_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        if stale >= config.patience or elapsed > 60 * config.max_minutes:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    wall = time.perf_counter() - started
    stats = {
        "train_wall_s": round(wall, 1),
        "tokens_per_s": round(tokens / wall, 1),
        "epochs": len(history),
        "best_valid_loss": round(best, 4),
        "params": sum(p.numel() for p in model.parameters()),
        "train_items": len(train_ids),
        "examples": len(train),
    }
    return CopyTrainResult(model, tokenizer, history, stats)


# ---------------------------------------------------------------- export


def export_copy_model(model: CopyModel, tokenizer: Tokenizer, directory: str | Path) -> Path:
    """Write the ONNX decoder (one graph: prompt and cached steps), the tokenizer and the torch weights."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model.eval()
    tokenizer.save(str(directory / COPY_TOKENIZER))
    model.save(directory)
    ids = torch.tensor([[5, 6, 7], [5, 6, 8]], dtype=torch.long)
    with torch.no_grad():
        _, past = model(ids[:, :2], model.empty_cache(2))
    export_decoder(
        model,
        (ids[:, 2:], past),
        directory / COPY_DECODER,
        ["input_ids", "past"],
        {"input_ids": {0: "batch", 1: "length"}},
    )
    return directory


def eos_id(tokenizer: Tokenizer) -> int:
    return tokenizer.token_to_id(EOS)
