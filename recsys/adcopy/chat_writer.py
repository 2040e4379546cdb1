"""Ad copy from a pretrained instruct model's ONNX decoder: batched decoding, the small writer's checks and fallback.

`ChatCopyWriter.write(record, interest)` decodes `n` candidates for one item (the first greedy, the others
sampled) and keeps of those that parse, pass `check_copy` (grounded, no claims, within length) and have no catalogue
boilerplate the informative ones (a fact beyond the name); beside them the record's own informative sentences
(`recsys.adcopy.extractive`) are options too. Of the options it ships the one that reads most naturally: the
lowest mean negative log-likelihood of the copy read alone by this writer's own decoder (no record, no prompt: as a
shopper reads it), plus `repeat_penalty` per unit of its repeated-trigram share (`None`: a copy that repeats a
phrase only when no option does not). Without an informative option a passing candidate that does not repeat
itself answers, else the template, flagged, like `CopyWriter` (`ChatCopyWriter.choose` has the order).
`write_many` does the same for many items at once, their prompts left-padded into one batch: the nightly
batch's path. No torch: onnxruntime and `tokenizers` only.

A chat writer's folder (written by `training.adcopy.llama.export_chat_writer`):

- `copy_decoder.onnx`: inputs `input_ids`, `attention_mask`, `past`; outputs `logits`, `present` (int8 when
  exported quantised; the float graph is then beside it as `copy_decoder_fp32.onnx`);
- `tokenizer.json`: the model's own tokenizer;
- `chat.json`: `{"format": "chat", "stop_ids": [...], "pad_id": ..., "model": ..., "quantised": ...}`, and
  `"repeat_penalty"` when one was chosen for the writer (`training.bench.adcopy_pretrained` picks it on
  validation items).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from recsys.adcopy.chat import parse_generated, record_prompt
from recsys.adcopy.checks import MAX_BODY, MAX_HEADLINE, Copy, as_text, check_copy
from recsys.adcopy.extractive import EXTRACTIVE_FALLBACK, informative_extractive_copies
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.quality import CopyQuality, copy_quality
from recsys.adcopy.records import ItemRecord
from recsys.adcopy.template import template_copy
from recsys.adcopy.writer import CopyResult, sample_top_k
from recsys.bundle.layout import COPY_DECODER, COPY_TOKENIZER

__all__ = ["BATCH_CANDIDATES", "CHAT_CONFIG", "FLOAT_DECODER", "ChatCopyWriter", "Draft", "Generation"]

CHAT_CONFIG = "chat.json"
FLOAT_DECODER = "copy_decoder_fp32.onnx"  # the float graph beside a quantised one
# Candidates per item off the live path (the nightly batch): more chances that one passes the checks and says
# something concrete, at about their multiple of decoding time, which the batch has and the live path has not.
BATCH_CANDIDATES = 4


@dataclass
class Generation:
    """Decoded continuations, `n` per prompt, grouped by prompt."""

    texts: list[str]
    scores: np.ndarray  # mean log-probability per continuation
    steps: int  # decoding steps run (after the prompt)
    finished: bool  # False when the deadline stopped decoding
    prompt_ms: float  # the prompt pass (prefill)
    step_ms: float  # median decoding step


@dataclass
class Draft:
    """One item's unchecked candidates from a batch, and its share of the batch's decoding."""

    texts: list[str]
    scores: np.ndarray
    steps: int
    generate_ms: float


class ChatCopyWriter:
    def __init__(
        self, directory: str | Path, facts: CatalogueFacts, threads: int = 1, decoder: str = COPY_DECODER
    ) -> None:
        directory = Path(directory)
        config_path = directory / CHAT_CONFIG
        if not config_path.exists():
            raise FileNotFoundError(f"{config_path} not found: not a chat writer folder (export_chat_writer makes one)")
        self.config = json.loads(config_path.read_text())
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(directory / decoder), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(directory / COPY_TOKENIZER))
        past = self.session.get_inputs()[2].shape  # (layers, 2, batch, kv_heads, past, head_dim)
        self.cache_shape = (int(past[0]), 2, int(past[3]), int(past[5]))
        self.stop_ids = np.asarray(self.config["stop_ids"], dtype=np.int64)
        self.pad_id = int(self.config["pad_id"])
        self.facts = facts
        # nats per token per unit of repeated-trigram share; None: a repeating copy only when nothing else informs
        self.repeat_penalty: float | None = self.config.get("repeat_penalty")
        self.last_generation: Generation | None = None  # the latest write()'s decoding, for its timings

    def empty_cache(self, batch: int) -> np.ndarray:
        layers, two, heads, dim = self.cache_shape
        return np.zeros((layers, two, batch, heads, 0, dim), dtype=np.float32)

    def reading_nlls(self, texts: Sequence[str], batch_size: int = 16) -> list[np.ndarray]:
        """Per text, the negative log-likelihood of each token after the first under this decoder, the text read
        alone (no prompt). Right-padded batches: a causal model's real tokens never see the pads."""
        encoded = [self.tokenizer.encode(text, add_special_tokens=False).ids for text in texts]
        out: list[np.ndarray] = []
        for start in range(0, len(encoded), batch_size):
            batch = encoded[start : start + batch_size]
            width = max(2, *(len(ids) for ids in batch))
            ids = np.full((len(batch), width), self.pad_id, dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, seq in enumerate(batch):
                ids[row, : len(seq)], mask[row, : len(seq)] = seq, 1
            logits, _ = self.session.run(
                None, {"input_ids": ids, "attention_mask": mask, "past": self.empty_cache(len(batch))}
            )
            logits = logits[:, :-1].astype(np.float64)
            shifted = logits - logits.max(axis=2, keepdims=True)
            logprob = shifted - np.log(np.exp(shifted).sum(axis=2, keepdims=True))
            target = np.take_along_axis(logprob, ids[:, 1:, None], axis=2)[..., 0]
            out += [-target[row, : max(len(seq) - 1, 0)] for row, seq in enumerate(batch)]
        return out

    def generate(
        self,
        prompts: Sequence[str],
        n: int = 1,
        rng: np.random.Generator | None = None,
        max_new_tokens: int = 80,
        temperature: float = 0.7,
        top_k: int = 20,
        deadline: float | None = None,
    ) -> Generation:
        """`n` continuations per prompt: the first greedy, the others sampled (temperature, top-k)."""
        rng = rng if rng is not None else np.random.default_rng(0)
        encoded = [self.tokenizer.encode(p, add_special_tokens=False).ids for p in prompts]
        width = max(len(ids) for ids in encoded)
        ids = np.full((len(encoded), width), self.pad_id, dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, seq in enumerate(encoded):  # left padding: every prompt ends at the last column
            ids[row, width - len(seq) :] = seq
            mask[row, width - len(seq) :] = 1
        started = time.perf_counter()
        logits, past = self.session.run(
            None, {"input_ids": ids, "attention_mask": mask, "past": self.empty_cache(len(ids))}
        )
        prompt_ms = (time.perf_counter() - started) * 1000
        if n > 1:  # every candidate of a prompt continues from the same prompt cache
            past, mask, logits = np.repeat(past, n, axis=2), np.repeat(mask, n, axis=0), np.repeat(logits, n, axis=0)
        logits = logits[:, -1]
        rows = len(logits)
        greedy = np.arange(rows) % n == 0
        out = np.zeros((rows, max_new_tokens), dtype=np.int64)
        logprob, lengths = np.zeros(rows), np.full(rows, max_new_tokens)
        done = np.zeros(rows, dtype=bool)
        steps, step_ms = 0, []
        for t in range(max_new_tokens):
            if deadline is not None and time.perf_counter() > deadline:
                break
            token = np.where(greedy, logits.argmax(axis=1), sample_top_k(logits, rng, temperature, top_k))
            full = logits - logits.max(axis=1, keepdims=True)
            token_logprob = full[np.arange(rows), token] - np.log(np.exp(full).sum(axis=1))
            token = np.where(done, self.pad_id, token)
            out[:, t] = token
            logprob += np.where(done, 0.0, token_logprob)
            newly = ~done & np.isin(token, self.stop_ids)
            lengths[newly] = t + 1
            done |= newly
            steps += 1
            if done.all():
                break
            mask = np.concatenate([mask, np.ones((rows, 1), dtype=np.int64)], axis=1)
            began = time.perf_counter()
            logits, past = self.session.run(None, {"input_ids": token[:, None], "attention_mask": mask, "past": past})
            step_ms.append((time.perf_counter() - began) * 1000)
            logits = logits[:, -1]
        texts = [
            self.tokenizer.decode(row[: lengths[i]].tolist(), skip_special_tokens=False) for i, row in enumerate(out)
        ]
        return Generation(
            texts,
            logprob / np.maximum(np.minimum(lengths, steps), 1),
            steps,
            bool(done.all()),
            prompt_ms,
            float(np.median(step_ms)) if step_ms else 0.0,
        )

    def choose(
        self,
        texts: Sequence[str],
        scores: np.ndarray,
        record: ItemRecord,
        result: CopyResult,
        max_headline: int = MAX_HEADLINE,
        max_body: int = MAX_BODY,
    ) -> CopyResult:
        """What a reader gets most from into `result`, in this order:

        1. of the options that state a fact of the record beyond its name and pass every check (the candidates,
           and the record's own sentences: source `fallback`, reason `EXTRACTIVE_FALLBACK`), the one that reads
           most naturally (`most_readable`);
        2. a passing candidate that says nothing concrete, unless it repeats itself too (best-scored first);
        3. the template (`fallback`).

        Several candidates per item are why the batch more often gets a generated copy in the first."""
        passing: list[tuple[Copy, CopyQuality]] = []  # best-scored first
        for i in np.argsort(-scores, kind="stable"):
            candidate = result.candidate(parse_generated(texts[i])[0], max_headline, max_body)
            if candidate is None:
                continue
            check = check_copy(candidate, record, self.facts, max_headline, max_body)
            quality = copy_quality(candidate, record)
            if check.ok and not quality.boilerplate:
                passing.append((candidate, quality))
            else:
                result.refuse(check, [f"catalogue boilerplate: {f}" for f in quality.boilerplate])
        generated = [copy for copy, quality in passing if quality.informative]
        extractive = informative_extractive_copies(record, result.interest, self.facts, max_headline, max_body)
        if generated or extractive:
            best = self.most_readable([*generated, *extractive], record)
            if best < len(generated):
                return result.take(generated[best])
            return result.fall_back(extractive[best - len(generated)], EXTRACTIVE_FALLBACK)
        if empty := [copy for copy, quality in passing if not quality.repeated_ngram_rate]:
            return result.take(empty[0])
        return result.fall_back()

    def most_readable(self, copies: Sequence[Copy], record: ItemRecord) -> int:
        """The index of the copy that reads most naturally: the lowest mean negative log-likelihood per token of
        the copy read alone (`reading_nlls`), plus `repeat_penalty` times its repeated-trigram share. Read alone
        because a shopper reads the copy without the record, and a body that restates the headline's name is
        predictable yet reads worse, which is what the penalty is for; with no penalty set, a copy that repeats
        a phrase comes after every one that does not. Ties keep the earlier copy (candidates before the record's
        sentences)."""
        if len(copies) == 1:
            return 0
        reading = [float(nll.mean()) if len(nll) else np.inf for nll in self.reading_nlls([as_text(c) for c in copies])]
        repeats = [copy_quality(copy, record).repeated_ngram_rate for copy in copies]
        penalty = self.repeat_penalty

        def cost(i: int) -> tuple[bool, float]:
            if penalty is None:
                return repeats[i] > 0, reading[i]
            return False, reading[i] + penalty * repeats[i]

        return min(range(len(copies)), key=cost)

    def write(
        self,
        record: ItemRecord,
        interest: str | None,
        n: int = 2,
        deadline_s: float | None = None,
        seed: int | None = None,
        max_headline: int = MAX_HEADLINE,
        max_body: int = MAX_BODY,
        max_new_tokens: int = 80,
    ) -> CopyResult:
        """Checked copy for one (item, interest); deterministic for the same inputs and seed."""
        started = time.perf_counter()
        key = (
            seed
            if seed is not None
            else int(hashlib.sha256(f"{record.item_id}|{interest}".encode()).hexdigest()[:8], 16)
        )
        result = CopyResult(template_copy(record, interest, max_headline, max_body), "fallback", interest=interest)
        deadline = None if deadline_s is None else started + deadline_s
        generation = self.generate(
            [record_prompt(record, interest)], n, np.random.default_rng(key), max_new_tokens, deadline=deadline
        )
        self.last_generation = generation
        result.tokens, result.candidates = generation.steps, n
        if not generation.finished and deadline is not None and time.perf_counter() > deadline:
            result.finished = False
            result.reasons.append(f"time budget of {deadline_s * 1000:.0f} ms ran out while generating")
        else:
            self.choose(generation.texts, generation.scores, record, result, max_headline, max_body)
        result.generate_ms = (time.perf_counter() - started) * 1000
        return result

    def draft_many(
        self,
        pairs: Sequence[tuple[ItemRecord, str | None]],
        batch_size: int = 8,
        n: int = BATCH_CANDIDATES,
        max_new_tokens: int = 80,
    ) -> list[Draft]:
        """The unchecked candidates for many (item, interest) pairs, `batch_size` prompts per decoder batch."""
        drafts = []
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start : start + batch_size]
            began = time.perf_counter()
            generation = self.generate(
                [record_prompt(record, interest) for record, interest in batch], n, max_new_tokens=max_new_tokens
            )
            share_ms = (time.perf_counter() - began) * 1000 / len(batch)
            for k in range(len(batch)):
                rows = slice(k * n, (k + 1) * n)
                drafts.append(Draft(generation.texts[rows], generation.scores[rows], generation.steps, share_ms))
        return drafts

    def finish(self, pairs: Sequence[tuple[ItemRecord, str | None]], drafts: Sequence[Draft]) -> list[CopyResult]:
        """Each pair's checked copy chosen from its draft (`choose`)."""
        results = []
        for (record, interest), draft in zip(pairs, drafts, strict=True):
            result = CopyResult(template_copy(record, interest), "fallback", interest=interest)
            result.tokens, result.candidates, result.generate_ms = draft.steps, len(draft.texts), draft.generate_ms
            results.append(self.choose(draft.texts, draft.scores, record, result))
        return results

    def write_many(
        self,
        pairs: Sequence[tuple[ItemRecord, str | None]],
        batch_size: int = 8,
        n: int = BATCH_CANDIDATES,
        max_new_tokens: int = 80,
    ) -> list[CopyResult]:
        """Checked copy for many (item, interest) pairs, `batch_size` prompts per decoder batch."""
        return self.finish(pairs, self.draft_many(pairs, batch_size, n, max_new_tokens))
