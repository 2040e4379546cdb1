"""The ad-copy runtime: onnxruntime decoding with a key/value cache, checked candidates, a grounded fallback.

`CopyWriter.write(record, interest)` samples a few candidates in one batch (they share the prompt, so the prompt
is run once and its cache copied), keeps the first one — by mean log-probability — that names the product,
states only facts of its record and passes the claims filter, tries one more round if none did, and otherwise
returns the template, which is grounded by construction. A deadline stops decoding; the template then answers,
flagged. Every result says where it came from and why. No torch here: the batch side uses this same class.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from recsys.adcopy._text import words
from recsys.adcopy.checks import MAX_BODY, MAX_HEADLINE, CheckResult, Copy, as_text, check_copy
from recsys.adcopy.constraint import SpanConstraint
from recsys.adcopy.facts import CatalogueFacts
from recsys.adcopy.prompt import (
    BODY,
    EOS,
    HOOKS,
    build_prompt,
    clean_sentences,
    parse_copy,
    prompt_description,
    shorten,
)
from recsys.adcopy.quality import boilerplate
from recsys.adcopy.records import ItemRecord
from recsys.adcopy.template import template_copy
from recsys.bundle.layout import COPY_CONFIG, COPY_DECODER, COPY_TOKENIZER

_SENTENCE_END = re.compile(r"(?<=[.!?:])\s+")


@dataclass
class CopyResult:
    copy: Copy
    source: str  # "generated" | "fallback"
    reasons: list[str] = field(default_factory=list)  # why candidates were rejected / why the fallback
    interest: str | None = None
    candidates: int = 0  # candidates generated
    rejected: int = 0  # candidates that failed a check
    rejected_claims: int = 0  # ... of which the claims filter refused
    rejected_unsupported: int = 0  # ... of which stated a fact not in the record
    rejected_vocabulary: int = 0  # ... of which used a word that is neither in the record nor in a hook
    tokens: int = 0  # decoding steps run
    generate_ms: float = 0.0
    finished: bool = True  # False: the deadline stopped decoding
    unchecked: Copy | None = None  # the best raw candidate before the checks (for measuring the filter)

    def candidate(self, parsed: Copy | None, max_headline: int, max_body: int) -> Copy | None:
        """The parsed candidate fitted to the limits (the first one is kept as `unchecked`), or None, counted as
        rejected, when the model did not write a headline and a body."""
        if parsed is None:
            self.rejected += 1
            self.reasons.append("candidate did not have a headline and a body")
            return None
        fitted = fit_copy(parsed, max_headline, max_body)
        if self.unchecked is None:
            self.unchecked = fitted
        return fitted

    def refuse(self, check: CheckResult, reasons: Sequence[str] = ()) -> None:
        """Count a candidate that failed a check, with why."""
        self.rejected += 1
        self.rejected_claims += bool(check.claims)
        self.rejected_unsupported += bool(check.unsupported)
        self.reasons.extend([*check.reasons(), *reasons])

    def take(self, copy: Copy) -> CopyResult:
        """Ship a generated candidate that passed the checks."""
        self.copy, self.source = copy, "generated"
        return self

    def fall_back(
        self, copy: Copy | None = None, why: str = "no candidate passed the checks: grounded template"
    ) -> CopyResult:
        """No candidate to ship: the template stays (or `copy` replaces it), with the distinct reasons (bounded)
        and why."""
        self.reasons = list(dict.fromkeys(self.reasons))[:8]
        if copy is not None:
            self.copy = copy
        if self.finished:
            self.reasons.append(why)
        return self


def sample_top_k(logits: np.ndarray, rng: np.random.Generator, temperature: float, top_k: int) -> np.ndarray:
    """One token per row, drawn from the row's `top_k` most likely at `temperature`."""
    top_k = min(top_k, logits.shape[1] - 1)
    scaled = logits / temperature
    top = np.argpartition(-scaled, top_k, axis=1)[:, :top_k]
    top_logits = np.take_along_axis(scaled, top, axis=1)
    p = np.exp(top_logits - top_logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    choice = (p.cumsum(axis=1) < rng.random((len(logits), 1))).sum(axis=1).clip(max=top_k - 1)
    return top[np.arange(len(logits)), choice]


def fit_copy(copy: Copy, max_headline: int = MAX_HEADLINE, max_body: int = MAX_BODY) -> Copy:
    """A generated copy cut to the length limits: the headline at a word boundary, the body by whole sentences."""
    return Copy(shorten(copy.headline, max_headline), fit_body(copy.body, max_body))


def fit_body(body: str, limit: int) -> str:
    """A body over the limit loses whole trailing sentences (still grounded: a part of a grounded text)."""
    if len(body) <= limit:
        return body
    kept = ""
    for sentence in _SENTENCE_END.split(body):
        joined = f"{kept} {sentence}".strip()
        if len(joined) > limit:
            break
        kept = joined
    return kept or shorten(body, limit)


class CopyWriter:
    def __init__(self, directory: str | Path, facts: CatalogueFacts, threads: int = 1) -> None:
        directory = Path(directory)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(directory / COPY_DECODER), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(directory / COPY_TOKENIZER))
        self.eos = self.tokenizer.token_to_id(EOS)
        self.body = self.tokenizer.token_to_id(BODY)
        past = self.session.get_inputs()[1].shape  # (layers, 2, batch, heads, past, head_dim)
        self.cache_shape = (int(past[0]), 2, int(past[3]), int(past[5]))
        self.block_size = int(json.loads((directory / COPY_CONFIG).read_text())["block_size"])
        self.facts = facts

    def _empty(self, batch: int) -> np.ndarray:
        layers, two, heads, dim = self.cache_shape
        return np.zeros((layers, two, batch, heads, 0, dim), dtype=np.float32)

    def sample(
        self,
        prompt: str,
        n: int,
        rng: np.random.Generator,
        max_new_tokens: int = 96,
        temperature: float = 0.7,
        top_k: int = 20,
        deadline: float | None = None,
        constraint: SpanConstraint | None = None,
    ) -> tuple[list[str], np.ndarray, int, bool]:
        """n continuations of the prompt: texts, mean log-probabilities, steps run, whether all finished.

        `constraint` restricts each step to the tokens that keep the copy a chain of spans of the record."""
        ids = np.asarray([self.tokenizer.encode(prompt).ids], dtype=np.int64)
        max_new_tokens = min(max_new_tokens, self.block_size - ids.shape[1])
        if max_new_tokens < 1:
            return [""] * n, np.full(n, -np.inf), 0, True
        logits, past = self.session.run(None, {"input_ids": ids, "past": self._empty(1)})
        past = np.repeat(past, n, axis=2)
        logits = np.repeat(logits[:, -1], n, axis=0)
        out = np.zeros((n, max_new_tokens), dtype=np.int64)
        logprob = np.zeros(n)
        done = np.zeros(n, dtype=bool)
        lengths = np.full(n, max_new_tokens)
        steps = 0
        state = constraint.initial(n) if constraint is not None else None
        for t in range(max_new_tokens):
            if deadline is not None and time.perf_counter() > deadline:
                break
            if constraint is not None:
                logits = np.where(constraint.mask(state), logits, -1e9)
            token = sample_top_k(logits, rng, temperature, top_k)
            full = logits - logits.max(axis=1, keepdims=True)
            token_logprob = full[np.arange(n), token] - np.log(np.exp(full).sum(axis=1))
            token = np.where(done, self.eos, token)
            if constraint is not None:
                constraint.advance(state, token)
            out[:, t] = token
            logprob += np.where(done, 0.0, token_logprob)
            newly = ~done & (token == self.eos)
            lengths[newly] = t + 1
            done |= newly
            steps += 1
            if done.all():
                break
            logits, past = self.session.run(None, {"input_ids": token[:, None], "past": past})
            logits = logits[:, -1]
        texts = [
            self.tokenizer.decode(row[: lengths[i]].tolist(), skip_special_tokens=False) for i, row in enumerate(out)
        ]
        finished = bool(done.all())
        return texts, logprob / np.maximum(lengths, 1), steps, finished

    @staticmethod
    def sources(record: ItemRecord) -> list[str]:
        """What copy may be made of: the record's fields and its description's clean sentences (no claims, no
        seller boilerplate)."""
        fields = [record.name, record.brand, *record.categories, record.price_text]
        return [text for text in [*fields, *clean_sentences(prompt_description(record))] if text]

    def write(
        self,
        record: ItemRecord,
        interest: str | None,
        max_body: int = MAX_BODY,
        max_headline: int = MAX_HEADLINE,
        n: int = 4,
        rounds: int = 2,
        deadline_s: float | None = None,
        seed: int | None = None,
        constrained: bool = True,
    ) -> CopyResult:
        """Checked copy for one (item, interest); deterministic for the same inputs and seed.

        `constrained=False` samples freely (any token): only for measuring what the span constraint adds."""
        started = time.perf_counter()
        deadline = None if deadline_s is None else started + deadline_s
        key = (
            seed
            if seed is not None
            else int(hashlib.sha256(f"{record.item_id}|{interest}".encode()).hexdigest()[:8], 16)
        )
        rng = np.random.default_rng(key)
        prompt = build_prompt(record, interest)
        sources, hooks = self.sources(record), [h.format(interest=interest) for h in HOOKS] if interest else []
        constraint = SpanConstraint(self.tokenizer, sources, self.body, self.eos, hooks) if constrained else None
        vocabulary = set(words(" ".join([*sources, *hooks])))
        result = CopyResult(template_copy(record, interest, max_headline, max_body), "fallback", interest=interest)
        for _ in range(rounds):
            texts, scores, steps, finished = self.sample(prompt, n, rng, deadline=deadline, constraint=constraint)
            result.tokens += steps
            result.candidates += n
            if not finished and deadline is not None and time.perf_counter() > deadline:
                result.finished = False
                result.reasons.append(f"time budget of {deadline_s * 1000:.0f} ms ran out while generating")
                break
            for i in np.argsort(-scores):
                candidate = result.candidate(parse_copy(texts[i]), max_headline, max_body)
                if candidate is None:
                    continue
                check = check_copy(candidate, record, self.facts, max_headline, max_body)
                strange = sorted(set(words(f"{candidate.headline} {candidate.body}")) - vocabulary)
                if check.ok and strange:
                    result.rejected += 1
                    result.rejected_vocabulary += 1
                    result.reasons.append(f"words not in the record: {', '.join(repr(w) for w in strange[:3])}")
                    continue
                furniture = boilerplate(as_text(candidate), record)
                if check.ok and not furniture:
                    result.take(candidate)
                    result.generate_ms = (time.perf_counter() - started) * 1000
                    return result
                result.refuse(check, [f"catalogue boilerplate: {f}" for f in furniture])
        result.fall_back()
        result.generate_ms = (time.perf_counter() - started) * 1000
        return result
